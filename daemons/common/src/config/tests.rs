use std::time::Duration;

use super::*;

/// A config shaped like a daemon's: two sections, a list of tables, a duration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct TestConfig {
    server: ServerSection,
    limits: LimitsSection,
    targets: Vec<Target>,
    modules: BTreeMap<String, Module>,
    metrics: MetricsSection,
}

/// A map of named tables with nested sub-tables, like probed's `[modules.<name>.http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Module {
    prober: String,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    http: Option<HttpOptions>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct HttpOptions {
    method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct ServerSection {
    name: String,
    port: u16,
    #[serde(with = "humantime_serde")]
    timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct LimitsSection {
    max_items: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Target {
    name: String,
    address: String,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            server: ServerSection::default(),
            limits: LimitsSection::default(),
            targets: Vec::new(),
            modules: BTreeMap::new(),
            metrics: MetricsSection::loopback(9999),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            name: "probe".into(),
            port: 8080,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self { max_items: 100 }
    }
}

impl DaemonConfig for TestConfig {
    const DAEMON: &'static str = "testd";
    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        if self.limits.max_items == 0 || self.limits.max_items > 1000 {
            out.push(Invalid::new(
                "limits.max-items",
                "out of range (expected 1 to 1000)",
            ));
        }
        if self.server.port < 1024 {
            out.push(Invalid::new(
                "server.port",
                "is privileged (expected 1024 or above)",
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.address.is_empty() {
                out.push(Invalid::new(
                    format!("targets[{i}].address"),
                    "must not be empty",
                ));
            }
        }
        out.extend(self.metrics.validate("metrics"));
        out
    }
    fn grpc(&self) -> &GrpcSection {
        unreachable!("not used by the loader")
    }
    fn metrics(&self) -> &MetricsSection {
        &self.metrics
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn main(&self) -> PathBuf {
        self.dir.path().join("testd.toml")
    }
    fn write_main(&self, text: &str) -> &Self {
        std::fs::write(self.main(), text).unwrap();
        self
    }
    fn write_dropin(&self, name: &str, text: &str) -> PathBuf {
        let d = self.dir.path().join("testd.d");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    fn sources(&self, env: &[(&str, &str)]) -> Sources {
        Sources::new(
            "testd",
            Some(&self.main()),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }
    fn load(&self, env: &[(&str, &str)]) -> Result<Loaded<TestConfig>, ConfigErrors> {
        load::<TestConfig>(&self.sources(env))
    }
    fn errors(&self, env: &[(&str, &str)]) -> Vec<String> {
        match self.load(env) {
            Ok(l) => panic!("expected errors, loaded {:?}", l.config),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }
}

#[test]
fn missing_file_gives_compiled_defaults() {
    let f = Fixture::new();
    let loaded = f.load(&[]).unwrap();
    assert_eq!(loaded.config, TestConfig::default());
    assert!(loaded.files.is_empty());
}

#[test]
fn partial_section_keeps_defaults_of_other_keys() {
    let f = Fixture::new();
    f.write_main("[server]\nport = 9000\n");
    let c = f.load(&[]).unwrap().config;
    assert_eq!(c.server.port, 9000);
    assert_eq!(c.server.name, "probe");
    assert_eq!(
        c.metrics,
        MetricsSection::loopback(9999),
        "daemon-specific default kept"
    );
}

#[test]
fn wrong_type_unknown_key_and_invalid_value_are_all_reported_with_positions() {
    let f = Fixture::new();
    f.write_main("# test\n[server]\nport = \"eighty\"\nnmae = \"x\"\n\n[limits]\nmax-items = 0\n");
    let main = f.main().display().to_string();
    let errs = f.errors(&[]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!(
            "{main}:3:8: server.port: invalid type: string \"eighty\""
        )),
        "{errs:#?}"
    );
    assert!(errs[0].contains("expected u16"), "{errs:#?}");
    assert!(
        errs[1].starts_with(&format!("{main}:4:1: server.nmae: unknown field `nmae`")),
        "{errs:#?}"
    );
    assert_eq!(
        errs[2],
        format!("{main}:7:13: limits.max-items: out of range (expected 1 to 1000)")
    );
}

#[test]
fn unknown_section_is_reported_once_and_the_rest_still_checked() {
    let f = Fixture::new();
    f.write_main("[srever]\nport = 1\nname = 2\n\n[server]\nport = 80\n");
    let main = f.main().display().to_string();
    let errs = f.errors(&[]);
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{main}:1:2: srever: unknown field `srever`")),
        "{errs:#?}"
    );
    assert_eq!(
        errs[1],
        format!("{main}:6:8: server.port: is privileged (expected 1024 or above)")
    );
}

#[test]
fn errors_inside_a_list_of_tables_name_the_element() {
    let f = Fixture::new();
    f.write_main(
        "[[targets]]\nname = \"a\"\naddress = \"10.0.0.1\"\n\n[[targets]]\nname = \"b\"\nadress = \"x\"\n\n[[targets]]\nname = \"c\"\naddress = \"\"\n",
    );
    let main = f.main().display().to_string();
    let errs = f.errors(&[]);
    // Element 1 is dropped to recover, so element "c" moves up: its semantic problem is left
    // for the next run rather than reported at the wrong element.
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!(
            "{main}:7:1: targets[1].adress: unknown field `adress`"
        )),
        "{errs:#?}"
    );
    f.write_main("[[targets]]\nname = \"a\"\naddress = \"10.0.0.1\"\n\n[[targets]]\nname = \"c\"\naddress = \"\"\n");
    assert_eq!(
        f.errors(&[]),
        vec![format!(
            "{main}:7:11: targets[1].address: must not be empty"
        )]
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    let f = Fixture::new();
    f.write_main("[server]\nport = \n");
    let main = f.main().display().to_string();
    let errs = f.errors(&[]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with(&format!("{main}:2:")), "{errs:#?}");
    assert!(errs[0].contains("syntax error"), "{errs:#?}");
}

#[test]
fn dropins_merge_in_lexical_order_and_their_errors_name_the_dropin() {
    let f = Fixture::new();
    f.write_main("[server]\nport = 9000\nname = \"main\"\n");
    f.write_dropin("20-late.toml", "[server]\nname = \"late\"\n");
    f.write_dropin("10-early.toml", "[server]\nname = \"early\"\nport = 9100\n");
    f.write_dropin("ignored.conf", "not toml at all");
    let c = f.load(&[]).unwrap().config;
    assert_eq!(c.server.name, "late");
    assert_eq!(c.server.port, 9100);

    let bad = f.write_dropin(
        "30-bad.toml",
        "[limits]\nmax-items = -3\n[server]\nport = 10\n",
    );
    let errs = f.errors(&[]);
    let bad = bad.display().to_string();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{bad}:2:13: limits.max-items: invalid value")),
        "{errs:#?}"
    );
    assert_eq!(
        errs[1],
        format!("{bad}:4:8: server.port: is privileged (expected 1024 or above)")
    );
}

#[test]
fn env_overrides_apply_last_and_map_kebab_case_keys() {
    let f = Fixture::new();
    f.write_main("[limits]\nmax-items = 5\n");
    let c = f
        .load(&[
            ("ROOKERY_TESTD__LIMITS__MAX_ITEMS", "7"),
            ("ROOKERY_TESTD__SERVER__TIMEOUT", "1m 30s"),
            ("ROOKERY_OTHER__LIMITS__MAX_ITEMS", "garbage"),
        ])
        .unwrap()
        .config;
    assert_eq!(c.limits.max_items, 7);
    assert_eq!(c.server.timeout, Duration::from_secs(90));
}

#[test]
fn bad_env_override_names_the_variable() {
    let f = Fixture::new();
    let errs = f.errors(&[
        ("ROOKERY_TESTD__LIMITS__MAX_ITEMS", "lots"),
        ("ROOKERY_TESTD__SERVER__PROT", "9000"),
        ("ROOKERY_TESTD__SERVER__PORT", "80"),
    ]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("env ROOKERY_TESTD__LIMITS__MAX_ITEMS: limits.max-items: invalid type"),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with("env ROOKERY_TESTD__SERVER__PROT: server.prot: unknown field"),
        "{errs:#?}"
    );
    assert_eq!(
        errs[2],
        "env ROOKERY_TESTD__SERVER__PORT: server.port: is privileged (expected 1024 or above)"
    );
}

#[test]
fn candidate_text_replaces_the_main_file() {
    let f = Fixture::new();
    f.write_main("[server]\nport = 9000\n");
    let loaded = load_candidate::<TestConfig>(&f.sources(&[]), "[server]\nport = 9001\n").unwrap();
    assert_eq!(loaded.config.server.port, 9001);
    let errs = load_candidate::<TestConfig>(&f.sources(&[]), "[server]\nport = 1\n").unwrap_err();
    assert_eq!(errs.0.len(), 1);
}

#[test]
fn unreadable_existing_file_is_an_error_not_defaults() {
    let f = Fixture::new();
    std::fs::create_dir(f.main()).unwrap(); // a directory cannot be read as a file
    let errs = f.errors(&[]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("cannot read"), "{errs:#?}");
}

#[test]
fn digest_changes_with_the_effective_config_only() {
    let f = Fixture::new();
    f.write_main("[server]\nport = 9000\n");
    let a = f.load(&[]).unwrap().digest;
    f.write_main("# a comment\n[server]\nport   =   9000\n");
    let b = f.load(&[]).unwrap().digest;
    f.write_main("[server]\nport = 9001\n");
    let c = f.load(&[]).unwrap().digest;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn group_writable_file_warns() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.write_main("");
    std::fs::set_permissions(f.main(), std::fs::Permissions::from_mode(0o664)).unwrap();
    let loaded = f.load(&[]).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("writable by group or others"));
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncdé f", 9), (2, 6));
    assert_eq!(line_col("", 0), (1, 1));
}

#[test]
fn factory_file_check_catches_wrong_values_and_missing_keys() {
    let good = "#targets = []\n#[server]\n# The name.\n#name = \"probe\"\n#port = 8080\n#timeout = \"5s\"\n#[limits]\n#max-items = 100\n#[modules]\n#[metrics]\n#listen = \"127.0.0.1:9999\"\n";
    assert_eq!(
        factory_file_problems::<TestConfig>(good),
        Vec::<String>::new()
    );
    let wrong = good.replace("8080", "8081");
    assert!(factory_file_problems::<TestConfig>(&wrong)[0].contains("differs"));
    let missing = good.replace("#timeout = \"5s\"\n", "");
    assert_eq!(
        factory_file_problems::<TestConfig>(&missing),
        vec!["keys not documented: server.timeout".to_owned()]
    );
}

#[test]
fn errors_in_nested_map_tables_are_each_reported_and_siblings_kept() {
    let f = Fixture::new();
    f.write_main(
        "[modules.good]\nprober = \"http\"\n\n[modules.bad]\nprober = \"http\"\ntimeout = \"banana\"\n\n[modules.bad.http]\nmethod = 5\n",
    );
    let errs = f.errors(&[]);
    let main = f.main().display().to_string();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{main}:6:11: modules.bad.timeout:")),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with(&format!(
            "{main}:9:10: modules.bad.http.method: invalid type"
        )),
        "{errs:#?}"
    );
}

/// A file of `n` targets after the sections, large enough to be parsed in pieces. Every
/// tenth address is a multi-line string holding a line that looks like a header.
fn large_file(n: usize) -> String {
    let mut text = String::from(
        "[server]\nname = \"big\"\nport = 9000\n\n[modules.http]\nprober = \"http\"\ntimeout = \"3s\"\n\n",
    );
    for i in 0..n {
        if i % 10 == 0 {
            text.push_str(&format!(
                "# [[targets]] in a comment\n[[targets]]\nname = \"t{i}\"\naddress = \"\"\"\n[[targets]]\nname = 'x'\"\"\"\n\n"
            ));
        } else {
            text.push_str(&format!(
                "[[ targets ]]\nname = \"t{i}\"\naddress = \"http://10.0.{}.{}/\"\n\n",
                i / 250,
                i % 250
            ));
        }
    }
    text
}

#[test]
fn a_large_file_is_parsed_in_pieces_to_the_same_config() {
    let text = large_file(8000);
    assert!(text.len() >= CHUNKED_MIN);
    let cuts = chunk_cuts(&text).unwrap();
    assert!(cuts.len() > 4, "{} pieces", cuts.len());
    for (end, arrays) in &cuts {
        assert_eq!(arrays, &vec!["targets"]);
        // Every cut is at a real header, never inside the multi-line strings.
        if *end < text.len() {
            assert!(
                text[*end..].starts_with("[[ targets ]]\nname = \"t"),
                "{}",
                &text[*end..*end + 40]
            );
        }
    }
    let f = Fixture::new();
    f.write_main(&text);
    let loaded = f.load(&[]).unwrap();
    let whole: TestConfig = toml::from_str(&text).unwrap();
    assert_eq!(loaded.config.targets.len(), 8000);
    assert_eq!(loaded.config.targets[10].address, "[[targets]]\nname = 'x'");
    assert_eq!(loaded.config, whole);
}

#[test]
fn a_large_file_with_errors_reports_them_at_their_lines() {
    let f = Fixture::new();
    let mut text = large_file(8000);
    text.push_str("[[targets]]\nname = \"last\"\nadress = \"x\"\n");
    f.write_main(&text);
    let main = f.main().display().to_string();
    let line = text.lines().count();
    let errs = f.errors(&[]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!(
            "{main}:{line}:1: targets[8000].adress: unknown field `adress`"
        )),
        "{errs:#?}"
    );
    // A table defined twice, far apart: only the whole file shows it.
    let mut text = large_file(8000);
    text.push_str("[modules.http]\nprober = \"tcp\"\n");
    f.write_main(&text);
    let errs = f.errors(&[]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("syntax error"), "{errs:#?}");
    // Another top-level table after the targets is fine, and lands in the config.
    let mut text = large_file(8000);
    text.push_str("[limits]\nmax-items = 7\n");
    f.write_main(&text);
    let loaded = f.load(&[]).unwrap();
    assert_eq!(loaded.config.limits.max_items, 7);
    assert_eq!(loaded.config.targets.len(), 8000);
}

/// `large_file(8000)` with the `[[targets]]` entry of index `i` replaced by `entry`.
fn large_file_with(i: usize, entry: &str) -> String {
    let text = large_file(8000);
    let header = "\n[[ targets ]]\nname = \"";
    let at = text
        .match_indices(header)
        .map(|(at, _)| at + 1)
        .find(|at| text[at + header.len() - 1..].starts_with(&format!("t{i}\"")))
        .unwrap();
    let end = at + text[at..].find("\n\n").unwrap() + 2;
    format!("{}{entry}{}", &text[..at], &text[end..])
}

/// The line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).unwrap()].lines().count() + 1
}

/// Every variant gives exactly what the whole-file parse gives (table, problems with their
/// positions, shifted lists); the valid ones that can be cut are really parsed in pieces.
#[test]
fn the_piecewise_parse_agrees_with_the_whole_file_parse() {
    let path = Path::new("/etc/rookery/testd.toml");
    let base = large_file(8000);
    let crlf = base.replace('\n', "\r\n");
    let variants: Vec<(&str, String, bool)> = vec![
        ("valid", base.clone(), true),
        ("valid, CRLF line ends", crlf, true),
        (
            "a table after the targets",
            format!("{base}[limits]\nmax-items = 7\n"),
            true,
        ),
        (
            "another module after the targets (shared key: whole file)",
            format!("{base}[modules.tcp]\nprober = \"tcp\"\n"),
            true,
        ),
        (
            "unknown key in a late target",
            large_file_with(7991, "[[targets]]\nname = \"t7991\"\nadress = \"x\"\n\n"),
            false,
        ),
        (
            "wrong type in a middle target",
            large_file_with(4001, "[[targets]]\nname = \"t4001\"\naddress = 5\n\n"),
            false,
        ),
        (
            "a key twice in one late target",
            large_file_with(
                7001,
                "[[targets]]\nname = \"t7001\"\naddress = \"a\"\naddress = \"b\"\n\n",
            ),
            false,
        ),
        (
            "a section defined again after the targets",
            format!("{base}[server]\nport = 9001\n"),
            false,
        ),
        (
            "a module defined again after the targets",
            format!("{base}[modules.http]\nprober = \"tcp\"\n"),
            false,
        ),
        (
            "a sub-table of a late target",
            large_file_with(
                6001,
                "[[targets]]\nname = \"t6001\"\naddress = \"a\"\n[targets.extra]\nx = 1\n\n",
            ),
            false,
        ),
        (
            "an inline targets array before the [[targets]]",
            format!("targets = [{{ name = \"i\", address = \"a\" }}]\n{base}"),
            false,
        ),
        (
            "an unterminated string running over many would-be cuts",
            large_file_with(
                2001,
                "[[targets]]\nname = \"t2001\"\naddress = \"\"\"\nunterminated\n\n",
            ),
            false,
        ),
        (
            "an open array value running over would-be cuts",
            large_file_with(
                3001,
                "[[targets]]\nname = \"t3001\"\naddress = [\n\"a\",\n\n",
            ),
            false,
        ),
        (
            "an array value holding header-like lines across a would-be cut",
            large_file_with(
                5001,
                &format!(
                    "[[targets]]\nname = \"t5001\"\naddress = [\n{}]\n\n",
                    "[[\"targets\"]],\n".repeat(10_000)
                ),
            ),
            false,
        ),
        (
            "an empty address in a late target (a semantic error)",
            large_file_with(7995, "[[targets]]\nname = \"t7995\"\naddress = \"\"\n\n"),
            true,
        ),
    ];
    for (what, text, parses) in &variants {
        assert!(text.len() >= CHUNKED_MIN, "{what}");
        let piecewise = check_file::<TestConfig>(path, text);
        let whole = check_whole::<TestConfig>(path, text);
        assert_eq!(piecewise, whole, "{what}");
        assert_eq!(whole.1.is_empty(), *parses, "{what}: {:#?}", whole.1);
        if !parses {
            assert!(parse_chunked::<TestConfig>(text).is_none(), "{what}");
        }
    }
    for what in [
        "valid",
        "valid, CRLF line ends",
        "a table after the targets",
    ] {
        let (_, text, _) = variants.iter().find(|v| v.0 == what).unwrap();
        assert!(chunk_cuts(text).unwrap().len() > 4, "{what}");
        assert!(parse_chunked::<TestConfig>(text).is_some(), "{what}");
    }
}

/// Errors of large files name the whole file's line and column and the key, through `load`.
#[test]
fn errors_deep_in_a_large_file_name_line_column_and_key() {
    let f = Fixture::new();
    let main = f.main().display().to_string();
    let cases = [
        (
            large_file_with(7991, "[[targets]]\nname = \"t7991\"\nadress = \"x\"\n\n"),
            "adress = ",
            1,
            "targets[7991].adress: unknown field `adress`",
        ),
        (
            large_file_with(4001, "[[targets]]\nname = \"t4001\"\naddress = 5\n\n"),
            "address = 5",
            11,
            "targets[4001].address: invalid type: integer `5`",
        ),
        (
            large_file_with(7995, "[[targets]]\nname = \"t7995\"\naddress = \"\"\n\n"),
            "address = \"\"\n",
            11,
            "targets[7995].address: must not be empty",
        ),
    ];
    for (text, needle, col, expected) in cases {
        f.write_main(&text);
        let errs = f.errors(&[]);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        let line = line_of(&text, needle);
        assert!(
            errs[0].starts_with(&format!("{main}:{line}:{col}: {expected}")),
            "{errs:#?} (expected line {line})"
        );
    }
    // Syntax errors: at the duplicate, at the second definition of the table.
    let text = large_file_with(
        7001,
        "[[targets]]\nname = \"t7001\"\naddress = \"a\"\naddress = \"b\"\n\n",
    );
    f.write_main(&text);
    let errs = f.errors(&[]);
    let line = line_of(&text, "address = \"b\"");
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{main}:{line}:1: syntax error")),
        "{errs:#?} (expected line {line})"
    );
    let base = large_file(8000);
    let text = format!("{base}[server]\nport = 9001\n");
    f.write_main(&text);
    let errs = f.errors(&[]);
    let line = base.lines().count() + 1;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("{main}:{line}:")) && errs[0].contains("syntax error"),
        "{errs:#?} (expected line {line})"
    );
}
