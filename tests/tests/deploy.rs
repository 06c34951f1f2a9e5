//! The systemd units in `deploy/` (docs/DEPLOY.md): `systemd-analyze verify`
//! accepts them, with the path of this build's binary in place of
//! `/usr/local/bin/panoptes`, and they take the paths and the graceful stop
//! the docs promise.
use std::path::PathBuf;
use std::process::Command;

use panoptes_tests::bin;

#[test]
fn the_systemd_units_verify() {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    for (unit, command) in [("panoptes-coordinator.service", "coordinator"), ("panoptes-worker.service", "worker")] {
        let text = std::fs::read_to_string(deploy.join(unit)).unwrap_or_else(|e| panic!("deploy/{unit}: {e}"));
        for want in [
            format!("ExecStart=/usr/local/bin/panoptes {command} --config /etc/panoptes/cluster.toml"),
            format!("--data-dir /var/lib/panoptes/{command}"),
            "KillSignal=SIGTERM".to_string(),
            "Restart=on-failure".to_string(),
            "StateDirectory=panoptes".to_string(),
        ] {
            assert!(text.contains(&want), "deploy/{unit} lacks `{want}`:\n{text}");
        }
        let path = dir.path().join(unit);
        std::fs::write(&path, text.replace("/usr/local/bin/panoptes", &bin().display().to_string())).unwrap();
        units.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("run systemd-analyze (Debian package systemd; scripts/setup.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {:?}\n{stderr}", out.status);
}
