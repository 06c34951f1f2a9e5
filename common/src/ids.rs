//! Identifiers users see and type.
use std::fmt;
use std::str::FromStr;

/// A job: shown as `job-17`; `17` is accepted on input too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job-{}", self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("'{0}' is not a job id (expected e.g. job-17)")]
pub struct BadJobId(pub String);

impl FromStr for JobId {
    type Err = BadJobId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = t.strip_prefix("job-").unwrap_or(t);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadJobId(s.to_string()));
        }
        digits.parse().map(JobId).map_err(|_| BadJobId(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_garbage() {
        assert_eq!("job-17".parse::<JobId>(), Ok(JobId(17)));
        assert_eq!("17".parse::<JobId>(), Ok(JobId(17)));
        assert_eq!(JobId(17).to_string(), "job-17");
        for bad in ["", "job-", "job-x", "-1", "job-1a", "99999999999999999999999"] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} accepted");
        }
    }
}
