use super::*;

fn req(models: &[&str]) -> pb::SubmitRequest {
    pb::SubmitRequest { source: "clip.mp4".into(), models: models.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

#[test]
fn worker_states_follow_heartbeat_age_and_drain() {
    assert_eq!(worker_state(true, false, Some(500), false, 4000), "active");
    assert_eq!(worker_state(true, true, Some(500), false, 4000), "draining");
    assert_eq!(worker_state(true, true, Some(4001), false, 4000), "lost");
    assert_eq!(worker_state(true, false, Some(4000), false, 4000), "active");
    // Not heard from since this leader took over: benefit of the doubt for one lease timeout.
    assert_eq!(worker_state(true, false, None, false, 4000), "active");
    assert_eq!(worker_state(true, false, None, true, 4000), "lost");
    assert_eq!(worker_state(false, false, Some(1), true, 4000), "unknown");
    assert_eq!(worker_state(false, true, None, true, 4000), "draining");
}

#[test]
fn submitted_models_are_checked_against_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[worker]\nmodels_dir = {:?}\n[models.mydet]\nfamily = \"yolov8\"\nfiles = [\"mydet.onnx\"]\n",
        dir.path().join("absent").display().to_string()
    );
    let mut cfg = Config::from_toml(&text, Path::new("c.toml")).unwrap();
    let e = validate_submit(&req(&["unicorns"]), &cfg).unwrap_err();
    assert_eq!(e.message(), "unknown model 'unicorns'; known models: colors, joy, mydet, objects");
    let e = validate_submit(&req(&["colors", "colors"]), &cfg).unwrap_err();
    assert_eq!(e.message(), "model 'colors' is listed twice");
    // The models directory is not on this coordinator: files are not checked.
    assert_eq!(validate_submit(&req(&["mydet", "objects"]), &cfg).unwrap().models, vec!["mydet", "objects"]);
    // It is: a missing file is named.
    cfg.worker.models_dir = dir.path().display().to_string();
    let e = validate_submit(&req(&["colors", "mydet"]), &cfg).unwrap_err();
    assert!(e.message().contains(&format!("needs the file {}", dir.path().join("mydet.onnx").display())), "{}", e.message());
    std::fs::write(dir.path().join("mydet.onnx"), b"x").unwrap();
    assert!(validate_submit(&req(&["colors", "mydet"]), &cfg).is_ok());
}

#[test]
fn config_rules_go_to_the_jobs_that_can_tell_them() {
    let text = "[alerts]\nrules = [\"crowd: count(person) >= 5 for 10s\", \"door: person enters door\", \"sad: emotion sad\"]\n";
    let cfg = Config::from_toml(text, Path::new("c.toml")).unwrap();
    let names = |r: &pb::SubmitRequest| validate_submit(r, &cfg).unwrap().rules.iter().map(|x| x.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&req(&["colors"])), Vec::<String>::new(), "no detector, no face model: none applies");
    assert_eq!(names(&req(&["objects"])), ["crowd"], "no zone 'door'");
    let mut r = req(&["objects", "joy"]);
    r.zones = vec!["door=0,0,1,0,1,1".into()];
    assert_eq!(names(&r), ["crowd", "door", "sad"]);
    // The job's own rule of a name wins.
    r.rules = vec!["crowd: count(person) >= 2".into()];
    let spec = validate_submit(&r, &cfg).unwrap();
    assert_eq!(spec.rules.iter().map(|x| x.text.as_str()).collect::<Vec<_>>(), ["crowd: count(person) >= 2", "door: person enters door", "sad: emotion sad"]);
    // Bad config rules stop the config from loading.
    let e = Config::from_toml("[alerts]\nrules = [\"people everywhere\"]\n", Path::new("c.toml")).unwrap().validate().unwrap_err();
    assert!(e.to_string().contains("alerts.rules 'people everywhere'"), "{e}");
}

#[tokio::test]
async fn sources_outside_the_policy_are_refused_before_a_job_exists() {
    let cfg = Config::from_toml("[sources]\nfile_dirs = []\nallow_networks = []\n", Path::new("c.toml")).unwrap();
    let e = check_source_policy("http://169.254.169.254/latest/meta-data/", &cfg).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("is a link-local address"), "{}", e.message());
    let e = check_source_policy("/etc/passwd", &cfg).await.unwrap_err();
    assert!(e.message().contains("sources.file_dirs is empty"), "{}", e.message());
    assert!(check_source_policy("http://93.184.216.34/clip.mp4", &cfg).await.is_ok());
    // The defaults allow any local file.
    let cfg = Config::from_toml("", Path::new("c.toml")).unwrap();
    assert!(check_source_policy("/etc/passwd", &cfg).await.is_ok());
}

#[test]
fn retention_is_parsed_defaulted_and_refused_when_it_makes_no_sense() {
    let mut cfg = Config::from_toml("[live]\nmax_lag_ms = 5000\n[retention]\nkeep = \"2h\"\nwhat = \"pictures\"\n", Path::new("c.toml")).unwrap();
    let with = |keep: &str, what: &str, source: &str| {
        let mut r = req(&["colors"]);
        (r.keep, r.keep_what, r.source) = (keep.into(), what.into(), source.into());
        r
    };
    let s = validate_submit(&with("90m", "results", "/v.mp4"), &cfg).unwrap();
    assert_eq!((s.keep_s, s.keep_what), (5400, KeepWhat::Results));
    let s = validate_submit(&with("", "", "/v.mp4"), &cfg).unwrap();
    assert_eq!((s.keep_s, s.keep_what), (7200, KeepWhat::Pictures), "the cluster's retention is the default");
    let msg = |r| validate_submit(&r, &cfg).unwrap_err().message().to_string();
    assert!(msg(with("soon", "", "/v.mp4")).contains("--keep: 'soon' is not a duration"));
    assert!(msg(with("5y", "", "/v.mp4")).contains("unknown unit 'y'"));
    assert!(msg(with("0s", "", "/v.mp4")).contains("would keep nothing"));
    assert!(msg(with("1h", "frames", "/v.mp4")).contains("--keep-what is 'frames'"));
    let m = msg(with("2s", "", "rtmp://live"));
    assert!(m.contains("shorter than a live frame may lag") && m.contains("keep at least 5s"), "{m}");
    // A file job has no lag: 2s is fine there.
    assert_eq!(validate_submit(&with("2s", "", "/v.mp4"), &cfg).unwrap().keep_s, 2);
    cfg.retention.keep.clear();
    assert_eq!(validate_submit(&with("", "", "/v.mp4"), &cfg).unwrap().keep_s, 0, "no retention: keep everything");
}

#[test]
fn bad_submissions_are_refused_with_what_is_wrong() {
    let cfg = Config::from_toml("", Path::new("c.toml")).unwrap();
    let refused = |r: pb::SubmitRequest| validate_submit(&r, &cfg).unwrap_err().message().to_string();
    let with = |f: &dyn Fn(&mut pb::SubmitRequest)| {
        let mut r = req(&["colors"]);
        f(&mut r);
        r
    };
    // FFmpeg protocols and unsupported schemes never become jobs.
    for s in ["concat:/a.mp4|/b.mp4", "pipe:0", "data:video/mp4;base64,AAAA", "subfile,,start,0,end,9,,:/etc/passwd"] {
        assert!(refused(with(&|r| r.source = s.into())).contains("is a URL scheme or FFmpeg protocol"), "{s}");
    }
    assert!(refused(with(&|r| r.source = "ftp://h/x.mp4".into())).contains("'ftp://' is not supported"));
    assert!(refused(with(&|r| r.source = "  ".into())).starts_with("source is empty"));
    assert_eq!(refused(with(&|r| r.source = "/".repeat(5000))), "source is 5000 bytes long; the limit is 4096");
    // Echoed names are cut short.
    let e = refused(with(&|r| r.models = vec!["x".repeat(100_000)]));
    assert!(e.starts_with(&format!("unknown model '{}… (100000 characters)'", "x".repeat(64))) && e.len() < 200, "{e}");
    assert!(refused(with(&|r| r.models = vec!["colors".into(), " ".into()])).starts_with("an empty model name is in the list"));
    assert_eq!(refused(with(&|r| r.name = "n".repeat(300))), "name is 300 characters long; the limit is 256 (give a shorter name)");
    assert!(refused(with(&|r| r.frame_step = -1)).contains("negative"));
    // 0 is the documented default (every frame); a long derived name is cut, not refused.
    assert_eq!(validate_submit(&with(&|r| r.frame_step = 0), &cfg).unwrap().frame_step, 1);
    let long = format!("http://h/{}.mp4", "a".repeat(1000));
    assert_eq!(validate_submit(&with(&|r| r.source = long.clone()), &cfg).unwrap().name.chars().count(), 256);
}
