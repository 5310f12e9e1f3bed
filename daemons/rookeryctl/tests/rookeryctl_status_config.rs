//! `rookeryctl status` against a real licensed (in-process, socket in a temp dir) and
//! `rookeryctl config check` against the daemon's own report.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rookery_common::config::Sources;
use rookery_common::daemon::Control;

mod support;
use support::rookeryctl;

fn licensed_config(dir: &Path) -> PathBuf {
    let path = dir.join("etc/licensed.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!(
            "[grpc]\nsocket = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[state]\ndirectory = \"{}\"\n",
            dir.join("run/licensed.sock").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// Starts licensed on a runtime of its own; returns its control and the runtime.
fn start_licensed(config: &Path, socket: &Path) -> (Control, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let control = Control::default();
    let sources = Sources::new("licensed", Some(config), Vec::new());
    let c = control.clone();
    rt.spawn(async move {
        rookery_licensed::app::run(sources, c)
            .await
            .expect("licensed runs")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "licensed did not bind {} within 20s",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (control, rt)
}

#[test]
fn status_shows_licensed_up_and_missing_daemons_down_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let run = run_dir.to_str().unwrap();
    let config = licensed_config(tmp.path());

    // Nothing running yet: licensed is down, and says why.
    let (code, out, _) = rookeryctl(&["--run-dir", run, "status", "--daemons", "licensed"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("licensed  down"), "{out}");
    assert!(out.contains("the daemon is not running"), "{out}");

    let (control, rt) = start_licensed(&config, &run_dir.join("licensed.sock"));

    let (code, out, _) = rookeryctl(&["--run-dir", run, "status"]);
    assert_eq!(code, 1, "other daemons are down: {out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line: {out}"))
            .to_owned()
    };
    let licensed = line("licensed");
    assert!(licensed.starts_with("licensed  up    v0.1.0"), "{out}");
    for d in ["packetd", "probed", "ingestd", "apid"] {
        let l = line(d);
        assert!(l.contains("down"), "{out}");
        assert!(
            l.contains(&format!(
                "no socket at {run}/{d}.sock: the daemon is not running"
            )),
            "{out}"
        );
    }

    let (code, out, _) = rookeryctl(&["--run-dir", run, "status", "--daemons", "licensed"]);
    assert_eq!(code, 0, "{out}");

    control.shutdown.cancel();
    rt.shutdown_timeout(Duration::from_secs(20));
    let (code, out, _) = rookeryctl(&["--run-dir", run, "status", "--daemons", "licensed"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("licensed  down"), "{out}");

    let (code, _, err) = rookeryctl(&["--run-dir", run, "status", "--daemons", "nosuchd"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown daemon \"nosuchd\""), "{err}");
}

#[test]
fn config_check_prints_the_daemon_report_and_exits_78() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("licensed.toml"),
        "[licence]\nmax-attempts = 0\nbogus = 1\n",
    )
    .unwrap();
    let (expected, expected_code) =
        rookery_common::daemon::check_config_report::<rookery_licensed::Config>(
            &Sources::from_process("licensed", Some(&etc.join("licensed.toml"))),
        );
    assert_eq!(expected_code, 78);

    let (code, out, _) = rookeryctl(&[
        "--config-dir",
        etc.to_str().unwrap(),
        "config",
        "check",
        "licensed",
    ]);
    assert_eq!(code, 78, "{out}");
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");
    assert!(
        out.contains("licensed.toml:3:1: licence.bogus: unknown field"),
        "{out}"
    );

    let (code, out, _) = rookeryctl(&[
        "--config-dir",
        etc.to_str().unwrap(),
        "config",
        "check",
        "all",
    ]);
    assert_eq!(code, 78, "{out}");
    assert!(
        out.contains("packetd: not part of this build, skipped"),
        "{out}"
    );

    std::fs::write(etc.join("licensed.toml"), "[licence]\nmax-attempts = 2\n").unwrap();
    let (code, out, _) = rookeryctl(&[
        "--config-dir",
        etc.to_str().unwrap(),
        "config",
        "check",
        "licensed",
    ]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn user_reset_password_sets_a_new_password_that_must_be_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("apid");
    std::fs::create_dir_all(&state).unwrap();
    let first = tmp.path().join("initial-admin");
    std::fs::write(&first, "username=admin\npassword=Original-Passw0rd-1\n").unwrap();
    {
        let store = rookery_apid::store::Store::open(&state).unwrap();
        rookery_apid::bootstrap::create_initial_admin(&store, &first).unwrap();
    }
    let state_s = state.to_str().unwrap();
    let (code, out, _) = rookeryctl(&["user", "reset-password", "admin", "--state-dir", state_s]);
    assert_eq!(code, 0, "{out}");
    let password = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("new password for admin: ")
        .unwrap()
        .to_owned();
    assert!(password.len() >= 12, "{out}");
    let store = rookery_apid::store::Store::open(&state).unwrap();
    let user = store.user_by_name("admin").unwrap().unwrap();
    assert!(rookery_apid::crypto::verify_password(
        &password,
        &user.password_hash
    ));
    assert!(!rookery_apid::crypto::verify_password(
        "Original-Passw0rd-1",
        &user.password_hash
    ));
    assert!(user.must_change_password);

    let (code, _, err) = rookeryctl(&["user", "reset-password", "nobody", "--state-dir", state_s]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reset the password of nobody"), "{err}");
}
