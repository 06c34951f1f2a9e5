"""A Panoptes client in Python, from the project's .proto alone (grpcio).

Usage: panoptes_client.py PROTO_DIR COORDINATOR VIDEO MODELS

Generates the stubs from PROTO_DIR/panoptes.proto into a temporary folder,
submits VIDEO for MODELS, waits (bounded) for the job to end, reads its
results with GetResults and with the StreamResults server stream, and prints
one JSON summary line. Exits non-zero on any failure.
"""
import importlib
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc


def stubs(proto_dir, out):
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", "panoptes.proto"])
    if rc != 0:
        raise SystemExit(f"protoc failed on {proto_dir}/panoptes.proto")
    sys.path.insert(0, out)
    return importlib.import_module("panoptes_pb2"), importlib.import_module("panoptes_pb2_grpc")


def channel(addr):
    """TLS when PANOPTES_TLS_CA is set (with PANOPTES_TLS_CERT/KEY for a
    cluster that requires client certificates), as the CLI does."""
    if not os.environ.get("PANOPTES_TLS_CA"):
        return grpc.insecure_channel(addr)
    read = lambda k: open(os.environ[k], "rb").read() if os.environ.get(k) else None
    creds = grpc.ssl_channel_credentials(read("PANOPTES_TLS_CA"), read("PANOPTES_TLS_KEY"), read("PANOPTES_TLS_CERT"))
    return grpc.secure_channel(addr, creds)


def main():
    proto_dir, addr, video, models = sys.argv[1:5]
    with tempfile.TemporaryDirectory() as out:
        pb, rpc = stubs(proto_dir, out)
        with channel(addr) as ch:
            api = rpc.PanoptesStub(ch)
            job = api.Submit(pb.SubmitRequest(source=video, models=models.split(","), name="from-python"), timeout=30).job_id
            deadline = time.time() + 300
            while True:
                st = api.GetStatus(pb.JobRef(job_id=job), timeout=10)
                if st.state in (pb.JOB_STATE_COMPLETED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
                    break
                if time.time() > deadline:
                    raise SystemExit(f"job {job} did not finish: {st}")
                time.sleep(0.3)
            if st.state != pb.JOB_STATE_COMPLETED:
                raise SystemExit(f"job {job} ended {pb.JobState.Name(st.state)}: {st.error}")
            # GetResults page by page (7 a page, so 30 results take 5 pages).
            rows, token, pages = [], "", 0
            while True:
                page = api.GetResults(pb.ResultsRequest(job_id=job, page_size=7, page_token=token), timeout=30)
                rows.extend(page.results)
                pages += 1
                token = page.next_page_token
                if not token or pages > 1000:
                    break
            streamed = list(api.StreamResults(pb.ResultsRequest(job_id=job), timeout=30))
            # A call the server must refuse, with the gRPC status it documents.
            try:
                api.GetStatus(pb.JobRef(job_id="job-99999"), timeout=10)
                raise SystemExit("an unknown job was not refused")
            except grpc.RpcError as e:
                unknown = e.code().name
            print(json.dumps({
                "job_id": job,
                "state": pb.JobState.Name(st.state),
                "frames_done": st.frames_done,
                "rows": [{"frame": r.frame, "model": r.model, "results": json.loads(r.results_json)} for r in rows],
                "streamed": len(streamed),
                "pages": pages,
                "unknown_job": unknown,
            }))


if __name__ == "__main__":
    main()
