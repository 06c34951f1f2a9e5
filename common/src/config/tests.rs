use super::*;

#[test]
fn defaults_make_a_local_cluster() {
    let c = Config::load(None, &BTreeMap::new()).unwrap();
    assert_eq!(c.coordinator_addrs(), vec!["127.0.0.1:7400"]);
    assert_eq!(c.coordinator_listen(1).unwrap(), "127.0.0.1:7400");
    assert_eq!(c.coordinator_data_dir(3), PathBuf::from("./data/coordinator-3"));
    assert!(c.coordinator_listen(2).is_err());
}

#[test]
fn example_file_parses_and_equals_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml.example");
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::from_toml(&text, &path).unwrap();
    c.validate().unwrap();
    assert_eq!(c, Config::default(), "cluster.toml.example must document the defaults");
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let p = Path::new("x.toml");
    let e = Config::from_toml("[cluster]\nshard_frame = 3\n", p).unwrap_err();
    assert!(e.to_string().contains("shard_frame"), "{e}");
    let mut c = Config::default();
    c.cluster.lease_timeout_ms = 100;
    assert!(c.validate().unwrap_err().to_string().contains("lease_timeout_ms"));
    c = Config::default();
    c.cluster.coordinators.push(Peer { id: 1, addr: "127.0.0.1:1".into() });
    assert!(c.validate().unwrap_err().to_string().contains("twice"));
}

#[test]
fn live_drop_policy_is_checked() {
    let e = parse("[live]\ndrop_policy = \"newest\"\n").unwrap_err();
    assert!(e.to_string().contains("drop_policy") && e.to_string().contains("`every_nth`"), "{e}");
    let e = parse("[live]\ndrop_policy = \"every_nth\"\nkeep_every = 0\n").unwrap_err();
    assert!(e.to_string().contains("keep_every"), "{e}");
    let c = parse("[live]\ndrop_policy = \"every_nth\"\nkeep_every = 3\n").unwrap();
    assert_eq!((c.live.drop_policy, c.live.keep_every), (DropPolicyName::EveryNth, 3));
}

#[test]
fn security_settings_are_checked() {
    let e = parse("[security]\ntls_cert = \"c.pem\"\n").unwrap_err();
    assert!(e.to_string().contains("tls_key"), "{e}");
    let e = parse("[security]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap_err();
    assert!(e.to_string().contains("tls_ca"), "{e}");
    assert!(parse("[security]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_ca = \"ca.pem\"\n").is_ok());
    assert!(parse("[security]\ntls_ca = \"ca.pem\"\n").is_ok(), "a worker may set the CA alone");
    let e = parse("[security]\nrequire_client_cert = true\n").unwrap_err();
    assert!(e.to_string().contains("panoptes certs"), "{e}");
    let e = parse("[security]\nmax_request_bytes = 10\n").unwrap_err();
    assert!(e.to_string().contains("max_request_bytes"), "{e}");
    assert!(parse("[security]\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_ca = \"ca\"\nrequire_client_cert = true\n").is_ok());
    assert!(!Config::default().security.web_plain_http, "the web UI follows tls_cert unless told otherwise");
    // Tokens protect the user-facing calls only; the internal ones need the secret.
    let e = parse("[security]\ntokens_file = \"tokens\"\n").unwrap_err();
    assert!(e.to_string().contains("cluster_secret_file") && e.to_string().contains("accept anyone"), "{e}");
    assert!(parse("[sources]\nfile_dirs = []\n[security]\ntokens_file = \"tokens\"\ncluster_secret_file = \"secret\"\n").is_ok());
    assert!(parse("[security]\ncluster_secret_file = \"secret\"\n").is_ok(), "a secret alone is fine");
    assert!(parse("[security]\ntls_cert = \"c\"\ntls_key = \"k\"\ntls_ca = \"ca\"\nweb_plain_http = true\n").unwrap().security.web_plain_http);
}

/// The default `sources.file_dirs`, `["/"]`, lets whoever submits read
/// any file the nodes can: fine for one user without tokens; with
/// tokens the config must name the directories (or `[]`).
#[test]
fn tokens_need_file_dirs_set_explicitly() {
    let secure = "[security]\ntokens_file = \"tokens\"\ncluster_secret_file = \"secret\"\n";
    let e = parse(secure).unwrap_err().to_string();
    assert!(e.contains("security.tokens_file is set but sources.file_dirs is not"), "{e}");
    assert!(e.contains("e.g. file_dirs = [\"/srv/videos\"], or to [] to allow no local files"), "{e}");
    for dirs in ["[]", "[\"/srv/videos\"]", "[\"/\"]"] {
        let c = parse(&format!("[sources]\nfile_dirs = {dirs}\n{secure}")).unwrap_or_else(|e| panic!("{dirs}: {e}"));
        assert!(c.sources.file_dirs.is_some(), "{dirs}");
    }
    // Without tokens (one user), no file at all and an empty [sources] keep allowing any file.
    assert_eq!(Config::default().sources.file_dirs(), vec!["/".to_string()]);
    assert_eq!(parse("[sources]\nallow_networks = []\n").unwrap().sources.file_dirs(), vec!["/".to_string()]);
    assert_eq!(parse("[sources]\nfile_dirs = [\"/v\"]\n").unwrap().sources.file_dirs(), vec!["/v".to_string()]);
    // The probe deadline.
    assert_eq!(Config::default().sources.probe_timeout_s, 120);
    assert_eq!(parse("[sources]\nprobe_timeout_s = 5\n").unwrap().sources.probe_timeout_s, 5);
    let e = parse("[sources]\nprobe_timeout_s = 0\n").unwrap_err().to_string();
    assert!(e.contains("sources.probe_timeout_s must be at least 1"), "{e}");
}

#[test]
fn env_overrides_the_file() {
    let mut env = BTreeMap::new();
    env.insert("PANOPTES_MODELS_DIR".to_string(), "/m".to_string());
    let c = Config::load(None, &env).unwrap();
    assert_eq!(c.worker.models_dir, "/m");
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn every_key_of_every_section_has_an_environment_override() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.toml");
    std::fs::write(&file, "[worker]\ncapacity = 2\nthreads = 3\n[frames]\nstore = true\n").unwrap();
    let env = vars(&[
        ("PANOPTES_WORKER_CAPACITY", "7"),          // a number, over the file
        ("PANOPTES_FRAMES_STORE", "no"),            // a boolean, over the file
        ("PANOPTES_LIVE_DROP_POLICY", "lag"),       // text, over a default
        ("PANOPTES_OBJECT_STORE_URL", "s3://frames/p"), // a section with an underscore
        ("PANOPTES_SOURCES_FILE_DIRS", "/videos, /srv"),   // a list, comma-separated
        ("PANOPTES_SOURCES_ALLOW_NETWORKS", "[\"10.0.0.0/8\"]"), // a list, as TOML
        ("PANOPTES_COORDINATOR_LISTEN", "127.0.0.1:9400"), // a key whose default is none
        ("PANOPTES_SECURITY_TLS_CA", "/etc/panoptes/ca.pem"), // a path whose default is none
        ("PANOPTES_LOG_LEVEL", "debug"),
        ("PANOPTES_WORKER_MODELS_DIR", "/models"),
        ("PANOPTES_MODELS_DIR", "/older-name"),     // the specific name wins
        // Not config: the CLI's, a test's; left alone.
        ("PANOPTES_TOKEN", "t"),
        ("PANOPTES_COORDINATOR", "127.0.0.1:7400"),
        ("PANOPTES_CHAOS_SEED", "3"),
        ("PANOPTES_WORKER_THREADS", ""),            // empty: not set
    ]);
    let c = Config::load(Some(&file), &env).unwrap();
    assert_eq!(c.worker.capacity, 7);
    assert_eq!(c.worker.threads, 3, "the file's value stays where no variable is set");
    assert!(!c.frames.store);
    assert_eq!(c.live.drop_policy, DropPolicyName::Lag);
    assert_eq!(c.object_store.url.as_deref(), Some("s3://frames/p"));
    assert_eq!(c.sources.file_dirs, Some(vec!["/videos".to_string(), "/srv".to_string()]));
    assert_eq!(c.sources.allow_networks, vec!["10.0.0.0/8".to_string()]);
    assert_eq!(c.coordinator.listen.as_deref(), Some("127.0.0.1:9400"));
    assert_eq!(c.security.tls_ca.as_deref(), Some(std::path::Path::new("/etc/panoptes/ca.pem")));
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.worker.models_dir, "/models");
}

#[test]
fn a_bad_environment_override_is_an_error_naming_the_variable() {
    let err = |pairs: &[(&str, &str)]| Config::load(None, &vars(pairs)).unwrap_err().to_string();
    let e = err(&[("PANOPTES_WORKER_CAPACTY", "3")]);
    assert!(e.contains("capacty") && e.contains("PANOPTES_WORKER_CAPACTY") && e.contains("capacity"), "{e}");
    let e = err(&[("PANOPTES_WORKER_CAPACITY", "many")]);
    assert!(e.contains("PANOPTES_WORKER_CAPACITY") && e.contains("whole number") && e.contains("'many'"), "{e}");
    let e = err(&[("PANOPTES_FRAMES_STORE", "maybe")]);
    assert!(e.contains("PANOPTES_FRAMES_STORE") && e.contains("true or false"), "{e}");
    // Read, then checked like the file: a zero capacity is refused and the
    // message says an override was in effect (by name, not value).
    let e = err(&[("PANOPTES_WORKER_CAPACITY", "0"), ("PANOPTES_OBJECT_STORE_REGION", "hunter2")]);
    assert!(e.contains("worker.capacity") && e.contains("PANOPTES_WORKER_CAPACITY") && !e.contains("hunter2"), "{e}");
}

#[test]
fn the_override_sections_are_the_config_sections() {
    let t = toml::Table::try_from(Config::default()).unwrap();
    let mut sections: Vec<&str> = t.keys().map(String::as_str).filter(|k| *k != "models").collect();
    let mut known = super::env::SECTIONS.to_vec();
    sections.sort();
    known.sort();
    assert_eq!(sections, known);
}

#[test]
fn peers_parse() {
    let p = parse_peers("1=127.0.0.1:7400, 2=127.0.0.1:7410").unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[1], Peer { id: 2, addr: "127.0.0.1:7410".into() });
    assert!(parse_peers("1:127.0.0.1:7400").is_err());
    assert!(parse_peers("x=127.0.0.1:7400").is_err());
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    let c = Config::from_toml(text, Path::new("x.toml"))?;
    c.validate()?;
    Ok(c)
}

#[test]
fn a_user_registry_adds_to_the_builtins() {
    let c = parse(
        r#"
        [worker]
        models = ["mydet", "colors"]
        [models.mydet]
        family = "yolov8"
        files = ["mydet.onnx"]
        input_size = 320
        labels = ["cat", "dog"]
        "#,
    )
    .unwrap();
    assert_eq!(c.model_names(), vec!["colors", "joy", "mydet", "objects"]);
    let m = &c.models["mydet"];
    assert_eq!(m.family, ModelFamily::Yolov8);
    assert_eq!(m.files, vec!["mydet.onnx"]);
    assert_eq!(m.input_size, Some(320));
    assert_eq!(m.labels.as_deref(), Some(&["cat".to_string(), "dog".to_string()][..]));
    // unset thresholds take the family's defaults
    assert_eq!((m.score_threshold, m.nms_threshold, m.max_detections), (Some(0.25), Some(0.45), Some(300)));
    assert_eq!(c.models["objects"], builtin_models()["objects"]);
    assert_eq!(c.model_paths("mydet").unwrap(), vec![PathBuf::from("./models/mydet.onnx")]);
    let v5 = parse("[models.v5]\nfamily = \"yolov5\"\nfiles = [\"v5.onnx\"]\n").unwrap();
    assert_eq!(v5.models["v5"].labels().len(), 80);
}

#[test]
fn a_builtin_is_overridden_key_by_key() {
    let c = parse("[models.objects]\nscore_threshold = 0.5\n[models.joy]\nfiles = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n").unwrap();
    let o = &c.models["objects"];
    assert_eq!(o.score_threshold, Some(0.5));
    assert_eq!(o.files, vec!["nanodet_m_416_coco.onnx"]);
    assert_eq!((o.nms_threshold, o.max_detections, o.input_size), (Some(0.6), Some(100), Some(416)));
    assert_eq!(o.labels().len(), 80);
    assert_eq!(c.models["joy"].files, vec!["a", "b", "c", "d", "e"]);
    assert_eq!(c.models["colors"], builtin_models()["colors"]);
    // a different family replaces the built-in, starting from that family's defaults
    let c = parse("[models.objects]\nfamily = \"yolov8\"\nfiles = [\"yolov8n.onnx\"]\n").unwrap();
    assert_eq!(c.models["objects"].family, ModelFamily::Yolov8);
    assert_eq!(c.models["objects"].score_threshold, Some(0.25));
}

#[test]
fn the_object_store_and_picture_rate_are_checked() {
    let err = |t: &str| parse(t).unwrap_err().to_string();
    let c = parse("[object_store]\nurl = \"s3://pics/a/b/\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\n").unwrap();
    assert_eq!(c.object_store.bucket_and_prefix().unwrap(), ("pics".to_string(), "a/b".to_string()));
    assert!(!parse("").unwrap().object_store.enabled());
    // An empty value is unset, as configs written before the keys were optional have it.
    let c = parse("[object_store]\nurl = \"\"\nendpoint = \"\"\ncredentials_file = \"\"\n[security]\ntokens_file = \"\"\ntls_cert = \"\"\n").unwrap();
    assert!(!c.object_store.enabled() && c.object_store.endpoint.is_none() && c.object_store.credentials_file.is_none());
    assert!(c.security.tokens_file.is_none() && c.security.tls_cert.is_none());
    let e = err("[object_store]\nurl = \"s3://pics\"\nregion = \"\"\n");
    assert!(e.contains("object_store.region"), "{e}");
    let e = err("[object_store]\nurl = \"s3://pics\"\nendpoint = \"http://127.0.0.1:9000\"\n");
    assert!(e.contains("allow_http = true"), "{e}");
    let e = err("[object_store]\nurl = \"gs://pics\"\n");
    assert!(e.contains("s3://BUCKET"), "{e}");
    let e = err("[object_store]\nurl = \"s3:///x\"\n");
    assert!(e.contains("names no bucket"), "{e}");
    let e = err("[object_store]\nurl = \"s3://p\"\nendpoint = \"ftp://h\"\n");
    assert!(e.contains("http:// or https://"), "{e}");
    let e = err("[frames]\nevery = \"1 fortnight\"\n");
    assert!(e.contains("frames.every"), "{e}");
    assert_eq!(parse("[frames]\nevery = \"250ms\"\n").unwrap().frames.every, "250ms");
    assert_eq!(crate::parse_interval_ms("250ms"), Ok(250));
    assert_eq!(crate::parse_interval_ms("2"), Ok(2000));
    assert_eq!(crate::parse_interval_ms("0"), Ok(0));
    assert_eq!(crate::format_interval_ms(1500), "1500ms");
    assert_eq!(crate::format_interval_ms(60_000), "1m");
}

#[test]
fn bad_models_are_refused_with_clear_messages() {
    let err = |t: &str| parse(t).unwrap_err().to_string();
    let e = err("[models.d]\nfamily = \"yolov9\"\nfiles = [\"d.onnx\"]\n");
    assert!(e.contains("yolov9") && e.contains("yolov8"), "{e}");
    let e = err("[models.d]\nfiles = [\"d.onnx\"]\n");
    assert!(e.contains("models.d") && e.contains("`family` is missing"), "{e}");
    let e = err("[models.d]\nfamily = \"yolov8\"\n");
    assert!(e.contains("models.d (family yolov8)") && e.contains("`files` must list one ONNX file"), "{e}");
    let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nscore_threshold = 1.5\n");
    assert!(e.contains("score_threshold is 1.5"), "{e}");
    let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nnms_threshold = -0.1\n");
    assert!(e.contains("nms_threshold is -0.1"), "{e}");
    let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nmax_detections = 0\n");
    assert!(e.contains("max_detections must be at least 1"), "{e}");
    let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\ninput_size = 100\n");
    assert!(e.contains("input_size is 100"), "{e}");
    let e = err("[models.d]\nfamily = \"yolov8\"\nfiles = [\"d.onnx\"]\nlabels = []\n");
    assert!(e.contains("labels is empty"), "{e}");
    let e = err("[models.d]\nfamily = \"yolov8\"\nfile = [\"d.onnx\"]\n");
    assert!(e.contains("unknown field `file`"), "{e}");
    let e = err("[models.colors]\nscore_threshold = 0.5\n");
    assert!(e.contains("models.colors (family kmeans)") && e.contains("`score_threshold` does not apply"), "{e}");
    let e = err("[models.joy]\nfiles = [\"p.onnx\"]\n");
    assert!(e.contains("five ONNX files") && e.contains("found 1 files"), "{e}");
    let e = err("[worker]\nmodels = [\"objects\", \"nope\"]\n");
    assert!(e.contains("worker.models lists 'nope'") && e.contains("colors, joy, objects"), "{e}");
}
