"""Standard gRPC tooling against a Panoptes coordinator, with no .proto file
and no generated stubs: everything about the API is learnt from the server.

Usage: reflect_health.py COORDINATOR

1. Lists the services through server reflection, v1alpha (grpcio-reflection's
   client) and v1 (the same messages, sent to grpc.reflection.v1).
2. Fetches the file descriptor of panoptes.v1.Panoptes through reflection,
   builds its request and response classes at run time and calls ListModels
   and ClusterStatus with them.
3. Calls grpc.health.v1.Health/Check for "", each Panoptes service and an
   unknown service.

Prints one JSON line; exits non-zero on any failure.
"""
import json
import os
import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

TIMEOUT = 20


def services_v1(channel):
    """ListServices over grpc.reflection.v1 (its messages are wire-identical to v1alpha's)."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    replies = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT))
    if len(replies) != 1 or not replies[0].HasField("list_services_response"):
        raise SystemExit(f"unexpected v1 reflection answer: {replies}")
    return sorted(s.name for s in replies[0].list_services_response.service)


def call_unary(channel, pool, service, method, **fields):
    """Call service/method with request and response classes built from reflected descriptors."""
    m = pool.FindServiceByName(service).FindMethodByName(method)
    request_cls = message_factory.GetMessageClass(m.input_type)
    response_cls = message_factory.GetMessageClass(m.output_type)
    rpc = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    return rpc(request_cls(**fields), timeout=TIMEOUT)


def health(channel, service):
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status)
    except grpc.RpcError as e:
        return e.code().name


def main():
    (addr,) = sys.argv[1:2]
    # With PANOPTES_TLS_CA (and a client certificate), over TLS, as the CLI does.
    ca = os.environ.get("PANOPTES_TLS_CA")
    if ca:
        read = lambda k: open(os.environ[k], "rb").read() if os.environ.get(k) else None
        creds = grpc.ssl_channel_credentials(read("PANOPTES_TLS_CA"), read("PANOPTES_TLS_KEY"), read("PANOPTES_TLS_CERT"))
        channel = grpc.secure_channel(addr, creds)
    else:
        channel = grpc.insecure_channel(addr)
    with channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        db = ProtoReflectionDescriptorDatabase(channel)
        v1alpha = sorted(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)
        panoptes = pool.FindServiceByName("panoptes.v1.Panoptes")
        models = call_unary(channel, pool, "panoptes.v1.Panoptes", "ListModels")
        cluster = call_unary(channel, pool, "panoptes.v1.Panoptes", "ClusterStatus")
        print(json.dumps({
            "services_v1alpha": v1alpha,
            "services_v1": services_v1(channel),
            "file": panoptes.file.name,
            "methods": sorted(m.name for m in panoptes.methods),
            "models": sorted(m.name for m in models.models),
            "cluster": {"leader": cluster.leader, "term": cluster.term, "members": len(cluster.members)},
            "health": {s: health(channel, s) for s in ["", "panoptes.v1.Panoptes", "panoptes.worker.v1.WorkerApi", "no.such.Service"]},
        }))


if __name__ == "__main__":
    main()
