//! `GET /api/v1/system` lists the network interfaces over rtnetlink: apid runs inside a
//! network namespace the test creates, with a veth pair carrying 10.92.0.1/24 and
//! fd00:92::1/64, and must show exactly `lo`, `va` and `vb` with their kind, state and
//! addresses, in the documented schema. Needs root (CI runs as root): a non-root run fails,
//! naming this test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use rookery_apid::app::Running;
use rookery_apid::config::Config;
use rookery_common::netns::{self, NetNs};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ADMIN_PW: &str = "first-boot-Secret-42";
const GOOD_PW: &str = "a-much-better-passphrase-7";

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.redirect_listen = "127.0.0.1:0".parse().unwrap();
    c.tls.cert = dir.join("tls/apid.crt");
    c.tls.key = dir.join("tls/apid.key");
    c.auth.signing_key = dir.join("state/token-signing.key");
    c.auth.initial_admin = dir.join("initial-admin");
    c.state.directory = dir.join("state");
    c.daemons.run_dir = dir.join("run");
    c.daemons.config_dir = dir.join("etc");
    c
}

/// Starts apid, logs in as the first-boot admin, changes the password and returns
/// `GET /api/v1/system` as JSON, with the OpenAPI document.
async fn system_view() -> (Value, Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("initial-admin"), format!("{ADMIN_PW}\n")).unwrap();
    let cfg = config(dir.path());
    let stop = CancellationToken::new();
    let running = Running::start(&cfg, stop.clone()).await.unwrap();
    let pem = std::fs::read(&cfg.tls.cert).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", running.https)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}/api/v1", running.https.port());
    let post = |path: &str, token: Option<&str>, body: Value| {
        let mut r = client.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let first = post(
        "/auth/login",
        None,
        json!({"username": "admin", "password": ADMIN_PW}),
    )
    .await;
    let token = post(
        "/auth/change-password",
        Some(&first),
        json!({"current_password": ADMIN_PW, "new_password": GOOD_PW}),
    )
    .await;
    let get = |path: &str| {
        let r = client.get(format!("{base}{path}")).bearer_auth(&token);
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let out = (get("/system").await, get("/openapi.json").await);
    stop.cancel();
    out
}

fn addresses(i: &Value) -> Vec<(String, u64, String)> {
    i["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_owned(),
                a["prefix_len"].as_u64().unwrap(),
                a["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn system_lists_interfaces_with_kind_state_and_addresses() {
    assert!(
        netns::is_root(),
        "system_lists_interfaces_with_kind_state_and_addresses needs root (network namespaces)"
    );
    let ns = NetNs::new("apid-if").unwrap();
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
        .unwrap();
    ns.ip(&["addr", "add", "10.92.0.1/24", "dev", "va"])
        .unwrap();
    ns.ip(&["addr", "add", "fd00:92::1/64", "dev", "va", "nodad"])
        .unwrap();
    ns.ip(&["link", "set", "va", "up"]).unwrap();
    // vb stays down: its state must show as such.
    let (system, doc) = ns
        .run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(system_view())
        })
        .unwrap();

    assert!(system["interfaces_error"].is_null(), "{system:#}");
    let all = system["interfaces"].as_array().unwrap();
    let mut names: Vec<&str> = all.iter().map(|i| i["name"].as_str().unwrap()).collect();
    let indexes: Vec<u64> = all.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert!(indexes.is_sorted(), "by index: {indexes:?}");
    names.sort_unstable();
    assert_eq!(names, ["lo", "va", "vb"], "{system:#}");
    let by_name = |n: &str| all.iter().find(|i| i["name"] == n).unwrap();
    let (lo, va, vb) = (by_name("lo"), by_name("va"), by_name("vb"));

    assert_eq!(lo["flags"]["loopback"], true);
    assert_eq!(
        addresses(lo)[0],
        ("127.0.0.1".to_owned(), 8, "host".to_owned())
    );

    assert_eq!(va["kind"], "veth");
    assert_eq!(va["mtu"], 1500);
    assert_eq!(va["flags"]["up"], true);
    assert!(va["counters"]["rx_bytes"].is_u64(), "{va:#}");
    let mac = va["mac"].as_str().unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    let va_addrs = addresses(va);
    assert_eq!(
        va_addrs[0],
        ("10.92.0.1".to_owned(), 24, "global".to_owned())
    );
    assert!(
        va_addrs.contains(&("fd00:92::1".to_owned(), 64, "global".to_owned())),
        "{va_addrs:?}"
    );

    assert_eq!(vb["kind"], "veth");
    assert_eq!(vb["flags"]["up"], false);
    assert_eq!(vb["oper_state"], "down");
    assert_eq!(addresses(vb), []);

    // The document describes what was served.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["SystemView"]["properties"]["interfaces"]["items"]["$ref"],
        "#/components/schemas/InterfaceView"
    );
    let states = schemas["OperStateView"]["enum"].as_array().unwrap();
    assert!(states.contains(&json!("down")) && states.contains(&json!("lower_layer_down")));
    for key in va.as_object().unwrap().keys() {
        assert!(
            schemas["InterfaceView"]["properties"].get(key).is_some(),
            "{key} undocumented"
        );
    }
}
