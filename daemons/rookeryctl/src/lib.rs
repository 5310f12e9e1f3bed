//! rookeryctl: the operator CLI on the box.
//!
//! `config check [<daemon>|all]` prints the same report as `rookery-<daemon> check-config`
//! (and exits 78 on problems); `status` asks every daemon over its socket how it is;
//! `licence show` and `licence set-key` talk to licensed. The entry point is [`run`].
#![allow(clippy::print_stdout, reason = "a command-line tool prints its report")]
#![allow(clippy::print_stderr, reason = "a command-line tool prints its errors")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use rookery_common::config::{DaemonConfig, Sources};
use rookery_common::daemon::{EXIT_CONFIG, check_config_report};
use rookery_common::proto;
use rookery_common::{CONFIG_DIR, DAEMONS, RUN_DIR};

/// How long one daemon may take to answer `status` before it is reported as not answering.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// rookeryctl: operate a Rookery appliance.
#[derive(Debug, Parser)]
#[command(name = "rookeryctl", version = rookery_common::VERSION)]
pub struct Cli {
    /// Directory of the daemons' config files.
    #[arg(long, global = true, value_name = "DIR", default_value = CONFIG_DIR)]
    pub config_dir: PathBuf,
    /// Directory of the daemons' gRPC sockets.
    #[arg(long, global = true, value_name = "DIR", default_value = RUN_DIR)]
    pub run_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Health and state of every daemon, over its socket.
    Status {
        /// Only these daemons (comma-separated).
        #[arg(long, value_delimiter = ',')]
        daemons: Vec<String>,
    },
    /// The licence.
    #[command(subcommand)]
    Licence(LicenceCommand),
    /// Console users (apid's database).
    #[command(subcommand)]
    User(UserCommand),
}

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Console recovery: set a new random password for NAME (printed once), force a change at
    /// the next login, clear the lockout and end the user's sessions.
    ResetPassword {
        /// The user.
        name: String,
        /// apid's state directory.
        #[arg(long, value_name = "DIR", default_value = "/var/lib/rookery/apid")]
        state_dir: PathBuf,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a daemon's config (or all): same report and exit code (78) as `check-config`.
    Check {
        /// `packetd`, `probed`, `ingestd`, `apid`, `licensed` or `all`.
        #[arg(default_value = "all")]
        daemon: String,
    },
}

/// `licence` subcommands.
#[derive(Debug, Subcommand)]
pub enum LicenceCommand {
    /// Licence state, entitlements and features.
    Show,
    /// Install a licence key (checked, persisted, then validated with the server).
    SetKey {
        /// `PENG-XXXX-XXXX-XXXX-XXXX-ABCD`.
        key: String,
    },
}

/// Prints an error the way every rookeryctl error looks.
pub fn print_error(message: &str) {
    eprintln!("rookeryctl: {message}");
}

/// Runs one command; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Config(ConfigCommand::Check { daemon }) => config_check(&cli.config_dir, &daemon),
        Command::Status { daemons } => status(&cli.run_dir, &daemons).await,
        Command::Licence(cmd) => licence(&cli.run_dir, cmd).await,
        Command::User(UserCommand::ResetPassword { name, state_dir }) => {
            reset_password(&state_dir, &name)
        }
    }
}

fn reset_password(state_dir: &Path, name: &str) -> u8 {
    match rookery_apid::bootstrap::reset_password(state_dir, name) {
        Ok(password) => {
            println!("new password for {name}: {password}");
            println!(
                "(it must be changed at the next login; the user's sessions and refresh tokens were ended)"
            );
            0
        }
        Err(err) => {
            print_error(&format!(
                "cannot reset the password of {name}: {}",
                rookery_common::error_chain(&err)
            ));
            1
        }
    }
}

/// Daemons whose config schema is part of this build (the others arrive with their issues).
fn check_one(config_dir: &Path, daemon: &str) -> Option<(Vec<String>, u8)> {
    let sources =
        |name: &str| Sources::from_process(name, Some(&config_dir.join(format!("{name}.toml"))));
    match daemon {
        rookery_licensed::Config::DAEMON => Some(check_config_report::<rookery_licensed::Config>(
            &sources(daemon),
        )),
        _ => None,
    }
}

fn config_check(config_dir: &Path, daemon: &str) -> u8 {
    let names: Vec<&str> = if daemon == "all" {
        DAEMONS.to_vec()
    } else if DAEMONS.contains(&daemon) {
        vec![daemon]
    } else {
        print_error(&format!(
            "unknown daemon \"{daemon}\" (expected one of {} or all)",
            DAEMONS.join(", ")
        ));
        return 2;
    };
    let mut code = 0;
    for name in names {
        match check_one(config_dir, name) {
            Some((lines, c)) => {
                for line in lines {
                    println!("{line}");
                }
                code = code.max(c);
            }
            None if daemon == "all" => println!("{name}: not part of this build, skipped"),
            None => {
                print_error(&format!("{name} is not part of this build"));
                return 2;
            }
        }
    }
    code
}

/// One daemon's answer to `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonState {
    /// The daemon.
    pub daemon: String,
    /// Whether it answered and reports itself serving.
    pub up: bool,
    /// The daemon's status, or why it is down.
    pub detail: String,
    /// Admin status, when it answered.
    pub status: Option<proto::StatusResponse>,
}

/// Asks `daemon` on its socket under `run_dir` for health and Admin status.
pub async fn query(run_dir: &Path, daemon: &str) -> DaemonState {
    let socket = run_dir.join(format!("{daemon}.sock"));
    let down = |detail: String| DaemonState {
        daemon: daemon.to_owned(),
        up: false,
        detail,
        status: None,
    };
    let asked = tokio::time::timeout(STATUS_TIMEOUT, async {
        let channel = rookery_common::grpc::connect(&socket)
            .await
            .map_err(|e| rookery_common::error_chain(&e))?;
        let mut health = tonic_health_client(channel.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| format!("health check failed: {}", s.message()))?
            .into_inner()
            .status;
        let status = proto::admin_client::AdminClient::new(channel)
            .status(proto::StatusRequest {})
            .await
            .map_err(|s| format!("status call failed: {}", s.message()))?
            .into_inner();
        Ok::<_, String>((serving, status))
    })
    .await;
    match asked {
        Err(_) => down(format!(
            "no answer within {}s on {}",
            STATUS_TIMEOUT.as_secs(),
            socket.display()
        )),
        Ok(Err(why)) => down(why),
        Ok(Ok((serving, status))) => {
            let up =
                serving == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
            DaemonState {
                daemon: daemon.to_owned(),
                up,
                detail: if up {
                    status.status_text.clone()
                } else {
                    format!("not serving ({})", status.state)
                },
                status: Some(status),
            }
        }
    }
}

fn tonic_health_client(
    channel: tonic::transport::Channel,
) -> tonic_health::pb::health_client::HealthClient<tonic::transport::Channel> {
    tonic_health::pb::health_client::HealthClient::new(channel)
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn status(run_dir: &Path, only: &[String]) -> u8 {
    for name in only {
        if !DAEMONS.contains(&name.as_str()) {
            print_error(&format!(
                "unknown daemon \"{name}\" (expected one of {})",
                DAEMONS.join(", ")
            ));
            return 2;
        }
    }
    let names: Vec<&str> = DAEMONS
        .iter()
        .copied()
        .filter(|d| only.is_empty() || only.iter().any(|o| o == d))
        .collect();
    let states = futures_join(run_dir, &names).await;
    println!(
        "{:<9} {:<5} {:<8} {:>6}  {:<12}  DETAIL",
        "DAEMON", "STATE", "VERSION", "UPTIME", "CONFIG"
    );
    let mut code = 0;
    for s in &states {
        let (version, uptime, digest) = match &s.status {
            Some(st) => (
                st.version.clone(),
                human_duration(st.uptime_seconds),
                st.config_digest.chars().take(12).collect::<String>(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<9} {:<5} {:<8} {:>6}  {:<12}  {}",
            s.daemon,
            if s.up { "up" } else { "down" },
            version,
            uptime,
            digest,
            s.detail
        );
        if !s.up {
            code = 1;
        }
    }
    code
}

async fn futures_join(run_dir: &Path, names: &[&str]) -> Vec<DaemonState> {
    let mut tasks = Vec::new();
    for name in names {
        let run_dir = run_dir.to_path_buf();
        let name = (*name).to_owned();
        tasks.push(tokio::spawn(async move { query(&run_dir, &name).await }));
    }
    let mut out = Vec::new();
    for (task, name) in tasks.into_iter().zip(names) {
        out.push(task.await.unwrap_or_else(|err| DaemonState {
            daemon: (*name).to_owned(),
            up: false,
            detail: format!("query failed: {err}"),
            status: None,
        }));
    }
    out
}

async fn licensing_client(
    run_dir: &Path,
) -> Result<proto::licensing_client::LicensingClient<tonic::transport::Channel>, u8> {
    let socket = run_dir.join("licensed.sock");
    match rookery_common::grpc::connect(&socket).await {
        Ok(ch) => Ok(proto::licensing_client::LicensingClient::new(ch)),
        Err(err) => {
            print_error(&format!("licensed: {}", rookery_common::error_chain(&err)));
            Err(1)
        }
    }
}

fn state_name(state: i32) -> &'static str {
    match proto::LicenseState::try_from(state) {
        Ok(proto::LicenseState::Development) => "development (release mode off)",
        Ok(proto::LicenseState::NoKey) => "no key",
        Ok(proto::LicenseState::Valid) => "valid",
        Ok(proto::LicenseState::Grace) => "grace (licence server unreachable)",
        Ok(proto::LicenseState::Expired) => "expired",
        Ok(proto::LicenseState::Invalid) => "invalid",
        Ok(proto::LicenseState::GraceExpired) => "grace period over",
        _ => "unknown",
    }
}

fn time_or_dash(unix: i64) -> String {
    if unix <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// Prints a licence status the way `licence show` does.
pub fn render_licence(s: &proto::LicenseStatus) -> String {
    let dash = |v: &str| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.to_owned()
        }
    };
    let mut out = String::new();
    out.push_str(&format!("state:          {}\n", state_name(s.state)));
    out.push_str(&format!(
        "release mode:   {}\n",
        if s.release_mode { "on" } else { "off" }
    ));
    out.push_str(&format!("key:            {}\n", dash(&s.key_masked)));
    out.push_str(&format!("product:        {}\n", dash(&s.product)));
    out.push_str(&format!("customer:       {}\n", dash(&s.customer)));
    out.push_str(&format!("tier:           {}\n", dash(&s.tier)));
    out.push_str(&format!(
        "expires:        {}\n",
        time_or_dash(s.expires_unix)
    ));
    out.push_str(&format!(
        "last validated: {}\n",
        time_or_dash(s.last_validated_unix)
    ));
    out.push_str(&format!(
        "grace until:    {}\n",
        time_or_dash(s.grace_until_unix)
    ));
    out.push_str(&format!("source:         {}\n", dash(&s.source)));
    if !s.last_error.is_empty() {
        out.push_str(&format!("last error:     {}\n", s.last_error));
    }
    out.push_str("features:\n");
    if s.features.is_empty() {
        out.push_str("  (none)\n");
    }
    for f in &s.features {
        out.push_str(&format!(
            "  {:<28} {:<10} {}\n",
            f.name,
            f.tier,
            if f.enabled { "enabled" } else { "disabled" }
        ));
    }
    out
}

async fn licence(run_dir: &Path, cmd: LicenceCommand) -> u8 {
    let mut client = match licensing_client(run_dir).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cmd {
        LicenceCommand::Show => client.get_license(proto::GetLicenseRequest {}).await,
        LicenceCommand::SetKey { key } => {
            if let Err(err) = key.parse::<rookery_licensed::key::LicenceKey>() {
                print_error(&format!("invalid licence key: {err}"));
                return EXIT_CONFIG;
            }
            client.set_key(proto::SetKeyRequest { key }).await
        }
    };
    match result {
        Ok(resp) => {
            print!("{}", render_licence(&resp.into_inner()));
            0
        }
        Err(status) => {
            print_error(&format!("licensed: {}", status.message()));
            if status.code() == tonic::Code::InvalidArgument {
                EXIT_CONFIG
            } else {
                1
            }
        }
    }
}
