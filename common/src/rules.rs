//! Alert rules (issue 18, part 4): their text, and a deterministic
//! evaluation over a job's committed results in frame order.
//!
//! A rule is `[NAME:] CONDITION [, cooldown DURATION]`, one of:
//! - `count(LABEL) OP N [for DURATION]`: a frame holds N (OP: `>=`, `>`,
//!   `<=`, `<`, `==`) detections of LABEL (any detector's);
//! - `emotion EMOTION [for DURATION]`: a face in the frame shows EMOTION;
//! - `no LABEL for DURATION` (`no object for 5m`: no detection at all): the
//!   frames hold none;
//! - `count(LABEL in ZONE) OP N [for DURATION]`: N tracked LABELs stand in
//!   the zone (`crate::zones`) in a frame;
//! - `LABEL enters ZONE`, `LABEL leaves ZONE` (`object` for any label): a
//!   track does, in the frame; these fire at every such frame (outside the
//!   cool-down), not once per run, and take no `for`.
//!
//! Episodes: a rule's condition holds over a run of consecutive analysed
//! frames; the rule fires once per run, at the first frame where the run has
//! lasted `for` (stream time from the run's first frame; without `for`, at
//! the run's first frame), and not again until the condition has stopped
//! holding and a new run has lasted as long. After firing, it stays silent
//! for `cooldown` of stream time (default 0) even if a new run qualifies.
//!
//! Each evaluation is a pure function of the frames fed, in order, and of
//! the state it starts from ([`RuleState`], serialisable), so the leader
//! can record both with the alerts it commits and a new leader resumes
//! exactly where the last commit left off.
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A comparison in a `count` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

impl Op {
    fn holds(self, a: u64, b: u64) -> bool {
        match self {
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Le => a <= b,
            Op::Lt => a < b,
            Op::Eq => a == b,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Eq => "==",
        }
    }
}

/// What a rule watches for in one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    Count { label: String, op: Op, n: u64 },
    /// Tracks of LABEL standing in ZONE.
    InZone { label: String, zone: String, op: Op, n: u64 },
    /// A track of LABEL (`None`: any) entering (`true`) or leaving ZONE.
    Crosses { label: Option<String>, zone: String, enters: bool },
    Emotion(String),
    /// No detection of this label (`None`: of any label).
    Absent(Option<String>),
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// As given (whitespace trimmed).
    pub text: String,
    pub name: String,
    pub condition: Condition,
    /// How long (ms of stream time) the condition must hold before the rule fires.
    pub for_ms: u64,
    /// Silence after firing, ms of stream time.
    pub cooldown_ms: u64,
}

impl Rule {
    /// Parse `[NAME:] CONDITION [for DURATION] [, cooldown DURATION]`.
    /// Unnamed rules are named after their condition.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        let (name, rest) = match t.split_once(':') {
            Some((n, r)) if !n.contains('(') => (Some(n.trim().to_string()), r.trim()),
            _ => (None, t),
        };
        if let Some(n) = &name {
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(format!("rule name '{n}': use letters, digits, '-' and '_' (e.g. crowd: count(person) >= 3 for 10s)"));
            }
        }
        let (cond, cooldown_ms) = match rest.rsplit_once(',') {
            Some((c, cd)) => {
                let cd = cd.trim();
                let d = cd.strip_prefix("cooldown").ok_or_else(|| format!("'{cd}' after the comma: only 'cooldown DURATION' goes there (e.g. , cooldown 1m)"))?;
                (c.trim(), duration(d.trim(), "cooldown")?)
            }
            None => (rest, 0),
        };
        let (cond, for_ms) = match cond.rsplit_once(" for ") {
            Some((c, d)) => (c.trim(), duration(d.trim(), "for")?),
            None => (cond, 0),
        };
        let words: Vec<&str> = cond.split_whitespace().collect();
        let condition = if let Some(inner) = cond.strip_prefix("count(") {
            let (label, tail) = inner.split_once(')').ok_or("count( needs its closing ')': count(person) >= 3")?;
            let label = label.trim();
            if label.is_empty() {
                return Err("count() names no label: count(person) >= 3".into());
            }
            let tail = tail.trim();
            let (op, n) = [(">=", Op::Ge), ("<=", Op::Le), ("==", Op::Eq), (">", Op::Gt), ("<", Op::Lt)]
                .iter()
                .find_map(|(s, op)| tail.strip_prefix(s).map(|n| (*op, n.trim())))
                .ok_or_else(|| format!("count({label}) needs a comparison: >=, >, <=, < or == and a number, e.g. count({label}) >= 3"))?;
            let n: u64 = n.parse().map_err(|_| format!("count({label}) {} '{n}': compare with a whole number", op.text()))?;
            if matches!((op, n), (Op::Lt, 0)) {
                return Err(format!("count({label}) < 0 can never hold"));
            }
            match format!(" {label}").rsplit_once(" in ") {
                Some((l, z)) if !l.trim().is_empty() && !z.trim().is_empty() => Condition::InZone { label: l.trim().to_string(), zone: z.trim().to_string(), op, n },
                Some(_) => return Err(format!("count({label}): write count(LABEL in ZONE), e.g. count(person in door) >= 2")),
                None => Condition::Count { label: label.to_string(), op, n },
            }
        } else if let ["emotion", e] = words.as_slice() {
            Condition::Emotion(e.to_string())
        } else if let Some((label, verb, zone)) = [" enters ", " leaves "].iter().find_map(|v| cond.rsplit_once(v).map(|(l, z)| (l.trim(), v.trim(), z.trim()))) {
            if label.is_empty() || zone.is_empty() || zone.contains(' ') {
                return Err(format!("'{cond}': write LABEL {verb} ZONE, e.g. car {verb} gate"));
            }
            if for_ms > 0 {
                return Err(format!("'{label} {verb} {zone}' fires when it happens: it takes no 'for' (a cool-down goes after a comma: , cooldown 1m)"));
            }
            let label = (!matches!(label, "object" | "objects")).then(|| label.to_string());
            Condition::Crosses { label, zone: zone.to_string(), enters: verb == "enters" }
        } else if let ["no", what] = words.as_slice() {
            if for_ms == 0 {
                return Err(format!("'no {what}' needs how long: no {what} for 5m"));
            }
            Condition::Absent(if *what == "object" || *what == "objects" { None } else { Some(what.to_string()) })
        } else {
            return Err(format!(
                "'{cond}' is not a rule: use count(LABEL) >= N [for 10s], count(LABEL in ZONE) >= N, LABEL enters ZONE, LABEL leaves ZONE, \
                 emotion EMOTION, or no LABEL for 5m (no object for 5m), optionally named (crowd: ...) and with ', cooldown 1m'"
            ));
        };
        let name = name.unwrap_or_else(|| cond.split_whitespace().collect::<Vec<_>>().join(" "));
        Ok(Rule { text: t.to_string(), name, condition, for_ms, cooldown_ms })
    }

    /// The labels and emotions the rule names, to check against the job's models.
    pub fn needs(&self) -> Needs<'_> {
        match &self.condition {
            Condition::Count { label, .. } | Condition::Absent(Some(label)) => Needs::Label(label),
            Condition::InZone { label, zone, .. } | Condition::Crosses { label: Some(label), zone, .. } => Needs::LabelInZone(label, zone),
            Condition::Crosses { label: None, zone, .. } => Needs::Zone(zone),
            Condition::Absent(None) => Needs::Detector,
            Condition::Emotion(e) => Needs::Emotion(e),
        }
    }
}

/// What a rule needs of the job's models.
#[derive(Debug, PartialEq)]
pub enum Needs<'a> {
    Label(&'a str),
    /// A label and a zone of the job.
    LabelInZone(&'a str, &'a str),
    /// A zone of the job and a detector.
    Zone(&'a str),
    Detector,
    Emotion(&'a str),
}

fn duration(s: &str, what: &str) -> Result<u64, String> {
    crate::parse_interval_ms(s).map_err(|e| format!("{what} {s}: {e}"))
}

/// One frame's figures, for every rule: detections per label and the
/// emotions of its faces, from the rows of all its models.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FrameFacts {
    pub labels: std::collections::BTreeMap<String, u64>,
    pub emotions: Vec<String>,
    /// Tracked detections standing in each zone, per (label, zone).
    pub in_zone: std::collections::BTreeMap<(String, String), u64>,
    /// Tracks entering (`true`) or leaving a zone in this frame: (label, zone, enters, track).
    pub crossings: Vec<(String, String, bool, u64)>,
}

impl FrameFacts {
    /// Add one model's results of the frame (shapes as in ANALYSIS_SPEC).
    pub fn add(&mut self, results: &Value) {
        for item in results.as_array().into_iter().flatten() {
            if let Some(e) = item.get("emotion").and_then(Value::as_str) {
                self.emotions.push(e.to_string());
            } else if let (Some(l), Some(_)) = (item.get("label").and_then(Value::as_str), item.get("box")) {
                *self.labels.entry(l.to_string()).or_default() += 1;
                for z in item.get("zones").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                    *self.in_zone.entry((l.to_string(), z.to_string())).or_default() += 1;
                }
            }
        }
    }
}

/// Where each rule stands between frames (committed with the alerts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// The stream time (ms) at which the current run began; `None`: the
    /// condition does not hold.
    pub run_since: Option<u64>,
    /// The current run has fired already.
    pub fired: bool,
    /// Silent until this stream time (ms).
    pub quiet_until: u64,
}

/// An alert: which rule fired, at which frame and stream time, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fired {
    pub rule: String,
    pub frame: u64,
    pub time_ms: u64,
    /// When the run that fired began (ms of stream time).
    pub since_ms: u64,
    pub detail: String,
}

/// Feed one analysed frame to every rule (frames in order); returns what fired.
pub fn evaluate(rules: &[Rule], states: &mut [RuleState], frame: u64, time_ms: u64, facts: &FrameFacts) -> Vec<Fired> {
    let mut out = Vec::new();
    for (rule, st) in rules.iter().zip(states.iter_mut()) {
        if let Condition::Crosses { label, zone, enters } = &rule.condition {
            let tracks: Vec<String> = facts
                .crossings
                .iter()
                .filter(|(l, z, e, _)| z == zone && e == enters && label.as_ref().is_none_or(|want| want == l))
                .map(|(l, _, _, t)| format!("{l} {t}"))
                .collect();
            if !tracks.is_empty() && time_ms >= st.quiet_until {
                st.quiet_until = time_ms.saturating_add(rule.cooldown_ms);
                let verb = if *enters { "entered" } else { "left" };
                let detail = format!("track {} {verb} {zone} in frame {frame}", tracks.join(", track "));
                out.push(Fired { rule: rule.name.clone(), frame, time_ms, since_ms: time_ms, detail });
            }
            continue;
        }
        let (holds, detail) = match &rule.condition {
            Condition::Crosses { .. } => unreachable!("handled above"),
            Condition::InZone { label, zone, op, n } => {
                let c = facts.in_zone.get(&(label.clone(), zone.clone())).copied().unwrap_or(0);
                (op.holds(c, *n), format!("{c} {label} in {zone} in frame {frame}"))
            }
            Condition::Count { label, op, n } => {
                let c = facts.labels.get(label).copied().unwrap_or(0);
                (op.holds(c, *n), format!("{c} {label} in frame {frame}"))
            }
            Condition::Emotion(e) => {
                let c = facts.emotions.iter().filter(|x| *x == e).count();
                (c > 0, format!("{c} face(s) {e} in frame {frame}"))
            }
            Condition::Absent(label) => {
                let c = match label {
                    Some(l) => facts.labels.get(l).copied().unwrap_or(0),
                    None => facts.labels.values().sum(),
                };
                (c == 0, format!("no {} since", label.as_deref().unwrap_or("object")))
            }
        };
        if !holds {
            st.run_since = None;
            st.fired = false;
            continue;
        }
        let since = *st.run_since.get_or_insert(time_ms);
        if st.fired || time_ms.saturating_sub(since) < rule.for_ms || time_ms < st.quiet_until {
            continue;
        }
        st.fired = true;
        st.quiet_until = time_ms.saturating_add(rule.cooldown_ms);
        let detail = match &rule.condition {
            Condition::Absent(_) => format!("{detail} {:.2} s ({:.2} s)", since as f64 / 1000.0, (time_ms - since) as f64 / 1000.0),
            _ if rule.for_ms > 0 => format!("{detail}, holding for {:.2} s", (time_ms - since) as f64 / 1000.0),
            _ => detail,
        };
        out.push(Fired { rule: rule.name.clone(), frame, time_ms, since_ms: since, detail });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(people: u64, emotions: &[&str]) -> FrameFacts {
        let mut f = FrameFacts::default();
        let dets: Vec<Value> = (0..people).map(|i| json!({"label": "person", "score": 0.9, "box": [i, 0, i + 1, 1]})).collect();
        f.add(&Value::Array(dets));
        f.add(&Value::Array(emotions.iter().map(|e| json!({"emotion": e, "box": [0, 0, 1, 1]})).collect()));
        f
    }

    fn run(rule: &str, frames: &[(u64, &FrameFacts)]) -> Vec<(u64, u64)> {
        let rules = vec![Rule::parse(rule).unwrap()];
        let mut st = vec![RuleState::default()];
        let mut out = Vec::new();
        for (i, (t, f)) in frames.iter().enumerate() {
            out.extend(evaluate(&rules, &mut st, i as u64, *t, f).into_iter().map(|a| (a.frame, a.since_ms)));
        }
        out
    }

    #[test]
    fn rules_parse_and_bad_ones_say_what_to_write() {
        let r = Rule::parse("crowd: count(person) >= 3 for 10s, cooldown 1m").unwrap();
        assert_eq!(r, Rule { text: "crowd: count(person) >= 3 for 10s, cooldown 1m".into(), name: "crowd".into(), condition: Condition::Count { label: "person".into(), op: Op::Ge, n: 3 }, for_ms: 10_000, cooldown_ms: 60_000 });
        assert_eq!(Rule::parse("emotion angry").unwrap().name, "emotion angry");
        assert_eq!(Rule::parse("no object for 5m").unwrap().condition, Condition::Absent(None));
        assert_eq!(Rule::parse("quiet: no car for 30s").unwrap().condition, Condition::Absent(Some("car".into())));
        for (bad, says) in [
            ("count(person) 3", "needs a comparison"),
            ("count(person) >= many", "whole number"),
            ("count() >= 1", "no label"),
            ("no person", "needs how long"),
            ("people everywhere", "is not a rule"),
            ("count(person) >= 1 for soon", "for soon"),
            ("count(person) >= 1, later 5s", "cooldown"),
            ("bad name!: emotion angry", "rule name"),
        ] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_rule_fires_once_per_run_after_holding_for_its_duration() {
        let (two, three) = (facts(2, &[]), facts(3, &[]));
        // 3 people from 1 s to 2.5 s (frames every 500 ms), 2 then 3 again from 3.5 s.
        let frames = [(0, &two), (500, &two), (1000, &three), (1500, &three), (2000, &three), (2500, &three), (3000, &two), (3500, &three), (4000, &three), (4500, &three)];
        assert_eq!(run("count(person) >= 3 for 1s", &frames), vec![(4, 1000), (9, 3500)]);
        assert_eq!(run("count(person) >= 3", &frames), vec![(2, 1000), (7, 3500)]);
        // A cool-down of 5 s silences the second run.
        assert_eq!(run("count(person) >= 3, cooldown 5s", &frames), vec![(2, 1000)]);
        assert_eq!(run("count(person) == 2", &frames), vec![(0, 0), (6, 3000)]);
    }

    #[test]
    fn emotion_and_absence_rules() {
        let (none, angry, happy) = (facts(0, &[]), facts(1, &["angry", "happy"]), facts(1, &["happy"]));
        let frames = [(0, &happy), (100, &angry), (200, &angry), (300, &happy), (400, &angry)];
        assert_eq!(run("emotion angry", &frames), vec![(1, 100), (4, 400)]);
        let frames = [(0, &happy), (1000, &none), (2000, &none), (3000, &none), (4000, &happy), (5000, &none)];
        assert_eq!(run("no person for 2s", &frames), vec![(3, 1000)]);
        assert_eq!(run("no object for 2s", &frames), vec![(3, 1000)]);
    }

    #[test]
    fn a_state_carried_over_resumes_exactly() {
        // Evaluating in two halves, handing the state over, fires the same as in one go.
        let three = facts(3, &[]);
        let frames: Vec<(u64, &FrameFacts)> = (0..20).map(|i| (i * 250, &three)).collect();
        let rules = vec![Rule::parse("count(person) >= 3 for 1s, cooldown 2s").unwrap()];
        let mut whole = vec![RuleState::default()];
        let all: Vec<Fired> = frames.iter().enumerate().flat_map(|(i, (t, f))| evaluate(&rules, &mut whole, i as u64, *t, f)).collect();
        let mut st = vec![RuleState::default()];
        let mut halves: Vec<Fired> = frames[..7].iter().enumerate().flat_map(|(i, (t, f))| evaluate(&rules, &mut st, i as u64, *t, f)).collect();
        let carried: Vec<RuleState> = round_trip(&st);
        let mut st = carried;
        halves.extend(frames[7..].iter().enumerate().flat_map(|(i, (t, f))| evaluate(&rules, &mut st, i as u64 + 7, *t, f)));
        assert_eq!(all, halves);
        assert_eq!(all.len(), 1, "one run, fired once: {all:?}");
    }

    #[test]
    fn zone_rules_count_what_stands_in_a_zone_and_fire_at_each_crossing() {
        let r = Rule::parse("gate: car enters gate, cooldown 1s").unwrap();
        assert_eq!(r.condition, Condition::Crosses { label: Some("car".into()), zone: "gate".into(), enters: true });
        assert_eq!(r.needs(), Needs::LabelInZone("car", "gate"));
        assert_eq!(Rule::parse("object leaves door").unwrap().needs(), Needs::Zone("door"));
        assert_eq!(Rule::parse("count(person in door) >= 2").unwrap().condition, Condition::InZone { label: "person".into(), zone: "door".into(), op: Op::Ge, n: 2 });
        assert!(Rule::parse("car enters gate for 5s").unwrap_err().contains("no 'for'"));
        assert!(Rule::parse("count( in door) >= 1").unwrap_err().contains("count(LABEL in ZONE)"));
        let crossing = |label: &str, enters: bool, track: u64| {
            let mut f = FrameFacts::default();
            f.crossings.push((label.into(), "gate".into(), enters, track));
            f
        };
        let (car_in, car_out, dog_in, nothing) = (crossing("car", true, 1), crossing("car", false, 1), crossing("dog", true, 2), FrameFacts::default());
        let frames = [(0, &car_in), (500, &dog_in), (800, &car_in), (1200, &car_out), (1500, &car_in), (1600, &nothing)];
        assert_eq!(run("car enters gate, cooldown 1s", &frames), vec![(0, 0), (4, 1500)], "the second car at 800 ms is within the cool-down");
        assert_eq!(run("object enters gate", &frames), vec![(0, 0), (1, 500), (2, 800), (4, 1500)]);
        assert_eq!(run("car leaves gate", &frames), vec![(3, 1200)]);
        let mut two = FrameFacts::default();
        two.add(&json!([{"label": "person", "score": 0.9, "box": [0, 0, 1, 1], "zones": ["door"]}, {"label": "person", "score": 0.9, "box": [5, 0, 1, 1], "zones": ["door"]}]));
        assert_eq!(run("count(person in door) >= 2", &[(0, &FrameFacts::default()), (100, &two)]), vec![(1, 100)]);
    }

    fn round_trip(s: &[RuleState]) -> Vec<RuleState> {
        serde_json::from_str(&serde_json::to_string(s).unwrap()).unwrap()
    }
}
