//! The chaos suite: a seeded random schedule of faults against a real cluster, and the invariant checker.
