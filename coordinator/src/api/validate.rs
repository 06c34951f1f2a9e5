//! A submission checked and turned into a job spec, or refused saying what
//! is wrong.
use super::*;
use panoptes_common::rules::Rule;
use panoptes_common::zones::Zone;

pub(super) const MAX_NAME: usize = 256;
pub(super) const MAX_SOURCE: usize = 4096;

pub(super) fn parse_job(s: &str) -> Result<u64, Status> {
    s.parse::<JobId>().map(|j| j.0).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Check a submission and turn it into a job spec, or say what is wrong.
///
/// Model names are checked against the model registry of `cfg` (the
/// built-ins plus the `[models]` of this coordinator's config file). When
/// `worker.models_dir` of `cfg` (relative to this process's working
/// directory) exists here, each named model's files must exist in it too;
/// when it does not exist here the check is skipped, since the files live
/// on the workers, which refuse to start without them. Absolute file names
/// are not checked here either.
pub fn validate_submit(r: &pb::SubmitRequest, cfg: &Config) -> Result<JobSpec, Status> {
    let default_height = cfg.cluster.target_height;
    let max_attempts = cfg.cluster.max_shard_attempts;
    let known = || cfg.model_names().join(", ");
    // Values echoed in an error are cut short: a status message travels in an
    // HTTP/2 header, which must stay small.
    fn echo(s: &str) -> String {
        match s.char_indices().nth(64) {
            Some((i, _)) => format!("{}… ({} characters)", &s[..i], s.chars().count()),
            None => s.to_string(),
        }
    }
    let source = r.source.trim();
    if source.is_empty() {
        return Err(Status::invalid_argument("source is empty: give a video path, file:// or http(s):// URL"));
    }
    if source.len() > MAX_SOURCE {
        return Err(Status::invalid_argument(format!("source is {} bytes long; the limit is {MAX_SOURCE}", source.len())));
    }
    let source = panoptes_media::normalize_source(source).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if r.models.is_empty() {
        return Err(Status::invalid_argument(format!("no models given; known models: {}", known())));
    }
    let models_dir = Path::new(&cfg.worker.models_dir);
    let check_files = models_dir.is_dir();
    let mut models: Vec<String> = Vec::new();
    for m in &r.models {
        let m = m.trim();
        if m.is_empty() {
            return Err(Status::invalid_argument(format!("an empty model name is in the list; known models: {}", known())));
        }
        let Some(entry) = cfg.models.get(m) else {
            return Err(Status::invalid_argument(format!("unknown model '{}'; known models: {}", echo(m), known())));
        };
        if models.iter().any(|x| x == m) {
            return Err(Status::invalid_argument(format!("model '{m}' is listed twice")));
        }
        if check_files {
            for f in entry.files.iter().filter(|f| !Path::new(f).is_absolute()) {
                let path = models_dir.join(f);
                if !path.is_file() {
                    return Err(Status::invalid_argument(format!(
                        "model '{m}' (family {}) needs the file {}, which is missing from the models directory {}",
                        entry.family,
                        path.display(),
                        models_dir.display()
                    )));
                }
            }
        }
        models.push(m.to_string());
    }
    if r.frame_step < 0 {
        return Err(Status::invalid_argument(format!("frame step {} is negative; use 1 (every frame) or more", r.frame_step)));
    }
    let frame_step = if r.frame_step == 0 { 1 } else { r.frame_step as u64 };
    let name = if r.name.trim().is_empty() {
        // The default name, from a source of up to MAX_SOURCE bytes, is cut to
        // fit; from the redacted source (no credentials, query or stream key).
        let shown = panoptes_media::policy::redact(&source);
        let n = Path::new(shown.split(['?', '#']).next().unwrap_or_default()).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| shown.clone());
        n.chars().take(MAX_NAME).collect()
    } else {
        r.name.trim().to_string()
    };
    if name.chars().count() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "name is {} characters long; the limit is {MAX_NAME} (give a shorter name)",
            name.chars().count()
        )));
    }
    if r.request_id.len() > 128 {
        return Err(Status::invalid_argument(format!("request_id is {} bytes long; the limit is 128", r.request_id.len())));
    }
    let target_height = if r.target_height == 0 { default_height } else { r.target_height };
    if !(16..=4320).contains(&target_height) {
        return Err(Status::invalid_argument("target_height must be between 16 and 4320"));
    }
    let keep = if r.keep.trim().is_empty() { cfg.retention.keep.as_str() } else { r.keep.as_str() };
    let keep_s = match keep.trim() {
        "" => 0,
        k => panoptes_common::parse_age(k).map_err(|e| Status::invalid_argument(format!("--keep: {e}")))?.as_secs(),
    };
    if !keep.trim().is_empty() && keep_s == 0 {
        return Err(Status::invalid_argument("--keep 0 would keep nothing: give a duration such as 1h, or leave it out to keep everything"));
    }
    let keep_what = if r.keep_what.trim().is_empty() { cfg.retention.what.as_str() } else { r.keep_what.trim() };
    let keep_what = KeepWhat::parse(keep_what)
        .ok_or_else(|| Status::invalid_argument(format!("--keep-what is '{}': use both, results or pictures", echo(keep_what))))?;
    let every = if r.pictures_every.trim().is_empty() { cfg.frames.every.as_str() } else { r.pictures_every.as_str() };
    let frames_every_ms = panoptes_common::parse_interval_ms(every).map_err(|e| Status::invalid_argument(format!("--pictures-every: {}", echo(&e))))?;
    if frames_every_ms > 86_400_000 {
        return Err(Status::invalid_argument("--pictures-every is longer than a day: give at most 24h (or --no-frames to keep no pictures)"));
    }
    if keep_s > 0 && is_pull_source(&source) && keep_s.saturating_mul(1000) < cfg.live.max_lag_ms {
        return Err(Status::invalid_argument(format!(
            "--keep {keep} is shorter than a live frame may lag (live.max_lag_ms = {} ms): results would be deleted before they are seen; keep at least {}s",
            cfg.live.max_lag_ms,
            cfg.live.max_lag_ms.div_ceil(1000)
        )));
    }
    let zones = validate_zones(&r.zones)?;
    let mut rules = validate_rules(&r.rules, &models, &zones, cfg)?;
    // `[alerts] rules`: each one the job's models and zones can tell, unless
    // the job has a rule of its name.
    for text in &cfg.alerts.rules {
        if let Ok(rule) = validate_rules(std::slice::from_ref(text), &models, &zones, cfg).map(|mut v| v.remove(0)) {
            if !rules.iter().any(|x| x.name == rule.name) {
                rules.push(rule);
            }
        }
    }
    let tracks = models.iter().any(|m| cfg.models.get(m).is_some_and(|e| e.family.is_detector()));
    Ok(JobSpec {
        keep_s,
        keep_what,
        name,
        source,
        models,
        frame_step,
        target_height,
        request_id: if r.request_id.is_empty() { None } else { Some(r.request_id.clone()) },
        max_attempts,
        frames_height: if r.no_frames || !cfg.frames.store { 0 } else { cfg.frames.max_height },
        frames_quality: cfg.frames.quality,
        frames_every_ms,
        // Set by the caller of `validate_submit` from who is calling.
        owner: String::new(),
        rules,
        zones,
        tracks,
    })
}

/// At most this many alert rules per job.
const MAX_RULES: usize = 32;

/// Parse a submission's alert rules and check that the job's models can
/// tell them: a label one of its detectors knows, an emotion its face
/// model gives. Names are unique.
fn validate_rules(texts: &[String], models: &[String], zones: &[Zone], cfg: &Config) -> Result<Vec<Rule>, Status> {
    use panoptes_common::rules::Needs;
    if texts.len() > MAX_RULES {
        return Err(Status::invalid_argument(format!("{} alert rules; the limit is {MAX_RULES} per job", texts.len())));
    }
    let entries: Vec<(&String, &panoptes_common::config::ModelConfig)> = models.iter().filter_map(|m| cfg.models.get(m).map(|e| (m, e))).collect();
    let detectors: Vec<&(&String, &panoptes_common::config::ModelConfig)> = entries.iter().filter(|(_, e)| e.family.is_detector()).collect();
    let mut rules: Vec<Rule> = Vec::new();
    for t in texts {
        let rule = Rule::parse(t).map_err(|e| Status::invalid_argument(format!("rule '{}': {e}", t.trim())))?;
        let no_zone = |z: &str| -> Option<String> {
            (!zones.iter().any(|x| x.name == z)).then(|| match zones.len() {
                0 => format!("it names the zone '{z}', but the job has no zones (add --zone {z}=x1,y1,x2,y2,x3,y3)"),
                _ => format!("the job has no zone '{z}' (its zones: {})", zones.iter().map(|x| x.name.as_str()).collect::<Vec<_>>().join(", ")),
            })
        };
        let needs = match rule.needs() {
            Needs::LabelInZone(l, z) => match no_zone(z) {
                Some(why) => return Err(Status::invalid_argument(format!("rule '{}': {why}", t.trim()))),
                None => Needs::Label(l),
            },
            Needs::Zone(z) => match no_zone(z) {
                Some(why) => return Err(Status::invalid_argument(format!("rule '{}': {why}", t.trim()))),
                None => Needs::Detector,
            },
            n => n,
        };
        let why = match needs {
            Needs::Label(l) if detectors.is_empty() => Some(format!("it counts '{l}', but the job runs no detector (add objects to --models)")),
            Needs::Label(l) if !detectors.iter().any(|(_, e)| e.labels().iter().any(|x| x == l)) => {
                let names: Vec<&str> = detectors.iter().map(|(m, _)| m.as_str()).collect();
                Some(format!("no detector of the job ({}) has the label '{l}' (`panoptes models` lists each model's labels)", names.join(", ")))
            }
            Needs::Detector if detectors.is_empty() => Some("it watches for objects, but the job runs no detector (add objects to --models)".into()),
            Needs::Emotion(_) if !entries.iter().any(|(_, e)| e.family == panoptes_common::config::ModelFamily::Mtcnn) => {
                Some("it reads faces' emotions, but the job runs no face model (add joy to --models)".into())
            }
            Needs::Emotion(e) if !panoptes_common::config::EMOTIONS.contains(&e) => {
                Some(format!("'{e}' is not an emotion the face model gives ({})", panoptes_common::config::EMOTIONS.join(", ")))
            }
            _ => None,
        };
        if let Some(why) = why {
            return Err(Status::invalid_argument(format!("rule '{}': {why}", t.trim())));
        }
        if rules.iter().any(|r| r.name == rule.name) {
            return Err(Status::invalid_argument(format!("two rules are named '{}': name them apart (NAME: CONDITION)", rule.name)));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Parse a submission's zones (`NAME=x1,y1,x2,y2,x3,y3,...`): names unique,
/// at most [`panoptes_common::zones::MAX_ZONES`].
pub fn validate_zones(texts: &[String]) -> Result<Vec<Zone>, Status> {
    let zones = texts.iter().map(|t| Zone::parse(t).map_err(|e| Status::invalid_argument(format!("--zone: {e}")))).collect::<Result<Vec<Zone>, Status>>()?;
    panoptes_common::zones::check_names(zones.iter().map(|z| z.name.as_str())).map_err(|e| Status::invalid_argument(format!("--zone: {e}")))?;
    Ok(zones)
}

/// Check a submitted (normalised) source against the `[sources]` policy of
/// `cfg`: local files inside `file_dirs`, network hosts not on internal
/// addresses unless in `allow_networks`. Runs before the job exists, so a
/// refused source is never probed or opened. Resolving the host blocks, so
/// the check runs on the blocking pool.
pub async fn check_source_policy(source: &str, cfg: &Config) -> Result<(), Status> {
    use panoptes_media::{policy::SourcePolicy, ErrorKind};
    let policy = SourcePolicy::new(&cfg.sources.file_dirs(), &cfg.sources.allow_networks)
        .map_err(|e| Status::failed_precondition(format!("this coordinator's config is invalid: {e}; fix [sources] and restart it")))?;
    let src = source.to_string();
    match tokio::task::spawn_blocking(move || policy.check(&src)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            // Not the source itself: its URL may carry a password (`user:pass@`).
            warn!(kind = ?e.kind(), "a submitted source was refused by the [sources] policy");
            // A host name that did not resolve in time may well resolve later.
            Err(if e.kind() == ErrorKind::Network { Status::unavailable(e.to_string()) } else { Status::invalid_argument(e.to_string()) })
        }
        Err(e) => Err(Status::internal(format!("checking the source '{source}' failed: {e}"))),
    }
}


pub(super) fn sub_name_empty(r: &pb::SubmitRequest) -> bool {
    r.name.trim().is_empty()
}
