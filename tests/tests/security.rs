//! Bearer tokens on real processes (docs/SECURITY.md): a coordinator with a
//! tokens file made by `panoptes token`; every user and admin command is
//! refused without a token, a user token cannot run admin commands, an admin
//! token runs everything, and no token appears in any log.
use std::process::{Command, Output};

use panoptes_tests::{bin, Cluster};

/// `panoptes token --role ROLE --name NAME`: (token, tokens-file line).
fn make_token(role: &str, name: &str) -> (String, String) {
    let out = Command::new(bin()).args(["token", "--role", role, "--name", name]).output().expect("run panoptes token");
    assert!(out.status.success(), "panoptes token: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().and_then(|l| l.strip_prefix("token: ")).expect("a `token: ...` line").to_string();
    let line = lines.next().expect("a tokens-file line").to_string();
    assert!(line.starts_with(&format!("{role} {name} ")), "{line}");
    assert!(!line.contains(&token), "the tokens-file line holds the hash, not the token");
    (token, line)
}

/// The CLI against `c` with exactly `token` (or none).
fn run(c: &Cluster, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args).args(["--coordinator", &c.addr]).env_remove("PANOPTES_TOKEN");
    if let Some(t) = token {
        cmd.env("PANOPTES_TOKEN", t);
    }
    cmd.output().expect("run panoptes")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tokens_guard_every_call() {
    let (user, user_line) = make_token("user", "alice");
    let (admin, admin_line) = make_token("admin", "root");
    let c = Cluster::start_secure(&[], &admin, |dir| {
        let file = dir.join("tokens");
        std::fs::write(&file, format!("# made by panoptes token\n{user_line}\n{admin_line}\n")).unwrap();
        format!("\n[security]\ntokens_file = \"{}\"\n", file.display())
    });

    let user_cmds: &[&[&str]] = &[&["status", "job-1"], &["cancel", "job-1"], &["metrics", "job-1"], &["videos"], &["models"]];
    let admin_cmds: &[&[&str]] = &[&["cluster", "status"], &["worker", "drain", "w9"], &["prune", "--older-than", "1h"]];

    for args in user_cmds.iter().chain(admin_cmds) {
        let o = run(&c, None, args);
        assert!(!o.status.success() && stderr(&o).contains("Unauthenticated"), "{args:?} without a token: {}", stderr(&o));
        let o = run(&c, Some("not-a-token"), args);
        assert!(!o.status.success() && stderr(&o).contains("Unauthenticated"), "{args:?} with a wrong token: {}", stderr(&o));
    }
    for args in admin_cmds {
        let o = run(&c, Some(&user), args);
        assert!(!o.status.success() && stderr(&o).contains("PermissionDenied"), "{args:?} with a user token: {}", stderr(&o));
    }
    // A user token passes the gate: what remains is the call's own answer.
    for args in [&["videos"][..], &["models"]] {
        let o = run(&c, Some(&user), args);
        assert!(o.status.success(), "{args:?} with a user token: {}", stderr(&o));
    }
    let o = run(&c, Some(&admin), &["cluster", "status", "--json"]);
    assert!(o.status.success(), "cluster status with the admin token: {}", stderr(&o));

    let logs = c.logs();
    for secret in [&user, &admin] {
        assert!(!logs.contains(secret.as_str()), "a token is in a log");
    }
}
