//! HTTP and TLS probes against a real nginx started by the test on loopback: status and body
//! regex, redirects, a wrong status with its reason, HTTP/2 over TLS with a test CA, and TLS
//! failures with the right reason for an expired, a wrong-name and an untrusted certificate
//! (all made with rcgen).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, date_time_ymd};
use rookery_probed::config::Prober;
use rookery_probed::probe::{Failure, Phase};

struct Ports {
    http: u16,
    good: u16,
    expired: u16,
    wrong_name: u16,
    untrusted: u16,
}

/// Writes `<name>.pem` and `<name>.key` for a leaf with `names`, signed by `issuer`.
fn leaf(dir: &Path, name: &str, names: &[&str], issuer: &Issuer<'_, KeyPair>, expired: bool) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    support::write(dir, &format!("{name}.pem"), &cert.pem());
    support::write(dir, &format!("{name}.key"), &key.serialize_pem());
}

fn ca(dir: &Path, name: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Rookery test {name}"));
    let cert = params.self_signed(&key).unwrap();
    support::write(dir, &format!("{name}.pem"), &cert.pem());
    Issuer::new(params, key)
}

fn start() -> (support::Server, Ports) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let test_ca = ca(d, "ca");
    let other_ca = ca(d, "other-ca");
    leaf(d, "good", &["localhost"], &test_ca, false);
    leaf(d, "expired", &["localhost"], &test_ca, true);
    leaf(d, "wrong", &["wrong.example"], &test_ca, false);
    leaf(d, "untrusted", &["localhost"], &other_ca, false);
    let p = Ports {
        http: support::free_port(),
        good: support::free_port(),
        expired: support::free_port(),
        wrong_name: support::free_port(),
        untrusted: support::free_port(),
    };
    let tls = |port: u16, cert: &str| {
        format!(
            " server {{\n  listen 127.0.0.1:{port} ssl http2;\n  ssl_certificate {{dir}}/{cert}.pem;\n\
             ssl_certificate_key {{dir}}/{cert}.key;\n  location / {{ default_type text/plain; return 200 \"secure {cert}\\n\"; }}\n }}\n"
        )
    };
    let body = format!(
        " server {{\n  listen 127.0.0.1:{http};\n\
         location = /ok {{ default_type text/plain; return 200 \"hello rookery\\n\"; }}\n\
         location = /missing {{ return 404; }}\n\
         location = /redir {{ return 302 /ok; }}\n\
         location = /loop {{ return 302 /loop; }}\n }}\n{}{}{}{}",
        tls(p.good, "good"),
        tls(p.expired, "expired"),
        tls(p.wrong_name, "wrong"),
        tls(p.untrusted, "untrusted"),
        http = p.http,
    );
    let server = support::nginx(dir, &body, p.http);
    for port in [p.good, p.expired, p.wrong_name, p.untrusted] {
        support::wait_tcp(([127, 0, 0, 1], port).into());
    }
    (server, p)
}

#[tokio::test]
async fn http_and_tls_probes_against_nginx() {
    let (server, p) = start();
    let ca = server.dir.path().join("ca.pem").display().to_string();

    // HTTP/1.1: status, body regex, phases.
    let m = "prober = \"http\"\ntimeout = \"3s\"\n[http]\nbody-regex = \"hello r[o]+kery\"\n";
    let ok = support::probe(m, &format!("http://127.0.0.1:{}/ok", p.http)).await;
    assert!(ok.success, "{ok:?}");
    assert_eq!(ok.facts.http_status, Some(200));
    assert_eq!(ok.facts.http_version, Some(1.1));
    for phase in [
        Phase::Resolve,
        Phase::Connect,
        Phase::FirstByte,
        Phase::Transfer,
    ] {
        assert!(ok.phase(phase).is_some(), "{phase:?} missing: {ok:?}");
    }
    assert!(ok.phase(Phase::Tls).is_none());

    // Without a body regex the body is counted, not kept.
    let counted = support::probe(
        "prober = \"http\"\n",
        &format!("http://127.0.0.1:{}/ok", p.http),
    )
    .await;
    assert!(counted.success, "{counted:?}");
    assert_eq!(counted.facts.body_bytes, Some(14), "{counted:?}");
    assert_eq!(ok.facts.body_bytes, Some(14), "{ok:?}");

    // Wrong status, with the status as the reason.
    let missing = support::probe(m, &format!("http://127.0.0.1:{}/missing", p.http)).await;
    assert_eq!(missing.failure, Some(Failure::UnexpectedStatus(404)));
    assert_eq!(missing.reason(), "unexpected_status");
    let m404 = "prober = \"http\"\n[http]\nvalid-status-codes = [404]\n";
    let expected404 = support::probe(m404, &format!("http://127.0.0.1:{}/missing", p.http)).await;
    assert!(expected404.success, "{expected404:?}");

    // Body mismatch.
    let mb = "prober = \"http\"\n[http]\nbody-regex = \"^goodbye\"\n";
    let mismatch = support::probe(mb, &format!("http://127.0.0.1:{}/ok", p.http)).await;
    assert_eq!(
        mismatch.failure,
        Some(Failure::BodyMismatch),
        "{mismatch:?}"
    );

    // Redirects: followed and counted; a loop ends at max-redirects; not followed = 302.
    let redir = support::probe(m, &format!("http://127.0.0.1:{}/redir", p.http)).await;
    assert!(redir.success, "{redir:?}");
    assert_eq!(redir.facts.redirects, 1);
    let ml = "prober = \"http\"\n[http]\nmax-redirects = 3\n";
    let looped = support::probe(ml, &format!("http://127.0.0.1:{}/loop", p.http)).await;
    assert_eq!(
        looped.failure,
        Some(Failure::TooManyRedirects),
        "{looped:?}"
    );
    assert_eq!(looped.facts.redirects, 3);
    let mn = "prober = \"http\"\n[http]\nfollow-redirects = false\nvalid-status-codes = [302]\n";
    let not_followed = support::probe(mn, &format!("http://127.0.0.1:{}/redir", p.http)).await;
    assert!(not_followed.success, "{not_followed:?}");
    assert_eq!(not_followed.facts.http_status, Some(302));

    // HTTPS with the test CA: HTTP/2 through ALPN, TLS facts.
    let mh = format!(
        "prober = \"http\"\n[http]\nbody-regex = \"secure good\"\n[tls]\nca-file = \"{ca}\"\nserver-name = \"localhost\"\n"
    );
    let h2 = support::probe(&mh, &format!("https://127.0.0.1:{}/", p.good)).await;
    assert!(h2.success, "{h2:?}");
    assert_eq!(h2.facts.http_version, Some(2.0));
    let tls = h2.facts.tls.as_ref().unwrap();
    assert!(tls.version.starts_with("TLS 1."), "{tls:?}");
    assert!(!tls.cipher.is_empty(), "{tls:?}");
    assert!(tls.days_left.unwrap() > 300, "{tls:?}");
    assert!(h2.phase(Phase::Tls).is_some());
    // The same outcome as /probe renders it, with blackbox_exporter's names.
    let text = rookery_probed::blackbox::render(Prober::Http, &h2);
    for line in [
        "probe_success 1",
        "probe_http_status_code 200",
        "probe_http_version 2",
        "probe_http_ssl 1",
        "probe_ip_protocol 4",
        "probe_failed_due_to_regex 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    for prefix in [
        "probe_http_duration_seconds{phase=\"tls\"} ",
        "probe_ssl_earliest_cert_expiry ",
        "probe_tls_version_info{version=\"TLS 1.",
        "probe_duration_seconds ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "{prefix} missing:\n{text}"
        );
    }
    let text = rookery_probed::blackbox::render(Prober::Http, &mismatch);
    assert!(
        text.lines().any(|l| l == "probe_failed_due_to_regex 1"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "probe_success 0"), "{text}");
    let mh1 = mh.replace("[http]\n", "[http]\nversion = \"http1\"\n");
    let h1 = support::probe(&mh1, &format!("https://127.0.0.1:{}/", p.good)).await;
    assert!(h1.success, "{h1:?}");
    assert_eq!(h1.facts.http_version, Some(1.1));

    // TLS prober: good, expired, wrong name, untrusted.
    let mt = |extra: &str| {
        format!(
            "prober = \"tls\"\ntimeout = \"3s\"\n[tls]\nca-file = \"{ca}\"\nserver-name = \"localhost\"\n{extra}"
        )
    };
    let good = support::probe(&mt(""), &format!("127.0.0.1:{}", p.good)).await;
    assert!(good.success, "{good:?}");
    assert_eq!(good.facts.tls.as_ref().unwrap().chain_len, 1);

    let expired = support::probe(&mt(""), &format!("127.0.0.1:{}", p.expired)).await;
    assert_eq!(expired.failure, Some(Failure::CertExpired), "{expired:?}");
    let et = expired.facts.tls.as_ref().unwrap();
    assert!(et.days_left.unwrap() < 0, "{et:?}");
    assert_eq!(
        et.earliest_expiry,
        Some(date_time_ymd(2021, 1, 1).unix_timestamp())
    );

    let wrong = support::probe(&mt(""), &format!("127.0.0.1:{}", p.wrong_name)).await;
    assert_eq!(wrong.failure, Some(Failure::CertNameMismatch), "{wrong:?}");
    assert_eq!(wrong.reason(), "cert_name_mismatch");

    let untrusted = support::probe(&mt(""), &format!("127.0.0.1:{}", p.untrusted)).await;
    assert_eq!(untrusted.reason(), "cert_untrusted", "{untrusted:?}");

    // insecure-skip-verify completes the handshake but keeps the reason as a fact.
    let skipped = support::probe(
        &mt("insecure-skip-verify = true\n"),
        &format!("127.0.0.1:{}", p.untrusted),
    )
    .await;
    assert!(skipped.success, "{skipped:?}");
    assert!(
        skipped
            .facts
            .tls
            .as_ref()
            .unwrap()
            .verify_error
            .as_deref()
            .unwrap()
            .contains("not trusted")
    );

    // min-days-valid: the good certificate (rcgen: valid until 4096) passes 30 days, the
    // expired one is reported as expired, not as "expires soon".
    let soon = support::probe(
        &mt("min-days-valid = 30\n"),
        &format!("127.0.0.1:{}", p.good),
    )
    .await;
    assert!(soon.success, "{soon:?}");
    drop(server);
}
