//! SSH probes against a real OpenSSH sshd started by the test on loopback: banner, key
//! exchange and host-key fingerprint; a wrong expected fingerprint fails with
//! `host_key_mismatch`, a banner regex that does not match with `body_mismatch`, a closed
//! port with `refused` and a non-SSH server with a protocol error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use rookery_probed::probe::{Failure, Phase};

#[tokio::test]
async fn ssh_probes_against_sshd() {
    let port = support::free_port();
    let (_sshd, fingerprint) = support::sshd(port);
    let addr = format!("127.0.0.1:{port}");

    let ok = support::probe(
        &format!(
            "prober = \"ssh\"\ntimeout = \"3s\"\n[ssh]\nexpected-fingerprint = \"{fingerprint}\"\nbanner-regex = \"^SSH-2\\\\.0-OpenSSH\"\n"
        ),
        &addr,
    )
    .await;
    assert!(ok.success, "{ok:?}");
    let ssh = ok.facts.ssh.as_ref().unwrap();
    assert!(ssh.banner.starts_with("SSH-2.0-OpenSSH"), "{ssh:?}");
    assert_eq!(ssh.fingerprint, fingerprint);
    assert_eq!(ssh.key_algorithm, "ssh-ed25519");
    assert!(!ssh.kex.is_empty() && !ssh.cipher.is_empty(), "{ssh:?}");
    assert!(ok.phase(Phase::Kex).is_some(), "{ok:?}");

    let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let wrong = support::probe(
        &format!("prober = \"ssh\"\n[ssh]\nexpected-fingerprint = \"{other}\"\n"),
        &addr,
    )
    .await;
    assert_eq!(
        wrong.failure,
        Some(Failure::HostKeyMismatch(fingerprint.clone())),
        "{wrong:?}"
    );
    assert_eq!(wrong.reason(), "host_key_mismatch");

    let banner = support::probe(
        "prober = \"ssh\"\n[ssh]\nbanner-regex = \"dropbear\"\n",
        &addr,
    )
    .await;
    assert_eq!(banner.failure, Some(Failure::BodyMismatch), "{banner:?}");

    let closed = support::free_port();
    let refused = support::probe("prober = \"ssh\"\n", &format!("127.0.0.1:{closed}")).await;
    assert_eq!(refused.failure, Some(Failure::Refused), "{refused:?}");

    // A server that is not SSH: it greets with something else and closes.
    let junk = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let junk_addr = junk.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        if let Ok((mut s, _)) = junk.accept().await {
            let _ = s.write_all(b"220 smtp.example ESMTP\r\n").await;
        }
    });
    let bad = support::probe("prober = \"ssh\"\ntimeout = \"1s\"\n", &junk_addr).await;
    assert!(!bad.success, "{bad:?}");
    assert!(bad.facts.ssh.as_ref().unwrap().banner.is_empty(), "{bad:?}");
    task.abort();
}
