//! `DIFY_APPS`, `DIFY_APPS_FILE`, `DIFY_API_KEY_FILE` (API.md §5).

use super::*;
use secrecy::ExposeSecret;
use std::collections::HashMap;

const KEY_A: &str = "app-KeyOfSupportNeverShown01";
const KEY_B: &str = "app-KeyOfSalesNeverShown0002";

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned(), false)
}

/// A file that is removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn file(text: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("dify-bff-apps-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    TempFile(path)
}

/// The error line, checked never to show a key.
fn refusal(vars: &[(&str, &str)]) -> (String, &'static str) {
    let err = load(vars).unwrap_err();
    let line = err.to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    for key in [KEY_A, KEY_B, "app-Key"] {
        assert!(!line.contains(key), "a key in the error line: {line}");
    }
    (line, err.var)
}

#[test]
fn one_key_is_the_one_app_at_the_root() {
    let config = load(&[("DIFY_API_KEY", KEY_A)]).unwrap();
    assert!(!config.apps.named);
    assert_eq!(config.apps.apps.len(), 1);
    assert_eq!(config.apps.apps[0].name, DEFAULT_APP);
    assert_eq!(config.apps.apps[0].api_key.expose_secret(), KEY_A);
}

#[test]
fn apps_take_their_own_base_url_or_dify_base_url() {
    let list = format!("support={KEY_A}, sales={KEY_B}@https://dify.example.com/v1");
    let config = load(&[
        ("DIFY_APPS", &list),
        ("DIFY_BASE_URL", "http://dify.local/v1"),
    ])
    .unwrap();
    assert!(config.apps.named);
    let apps = &config.apps.apps;
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0].name, "support");
    assert_eq!(apps[0].api_key.expose_secret(), KEY_A);
    assert_eq!(apps[0].base_url.as_str(), "http://dify.local/v1/");
    assert_eq!(apps[1].name, "sales");
    assert_eq!(apps[1].api_key.expose_secret(), KEY_B);
    assert_eq!(apps[1].base_url.as_str(), "https://dify.example.com/v1/");
}

#[test]
fn the_apps_file_skips_blank_lines_and_comments() {
    let f = file(&format!(
        "# the team's bots\n\nsupport={KEY_A}\n  # sales moved\nsales={KEY_B}@http://other:5001/v1\n"
    ));
    let config = load(&[("DIFY_APPS_FILE", f.path().to_str().unwrap())]).unwrap();
    let names: Vec<&str> = config.apps.apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["support", "sales"]);
    assert_eq!(
        config.apps.apps[1].base_url.as_str(),
        "http://other:5001/v1/"
    );
}

#[test]
fn the_key_file_ignores_its_trailing_newline() {
    let f = file(&format!("{KEY_A}\n"));
    let config = load(&[("DIFY_API_KEY_FILE", f.path().to_str().unwrap())]).unwrap();
    assert!(!config.apps.named);
    assert_eq!(config.apps.apps[0].api_key.expose_secret(), KEY_A);
}

#[test]
fn two_sources_are_refused() {
    let list = format!("support={KEY_A}");
    let (line, var) = refusal(&[("DIFY_API_KEY", KEY_B), ("DIFY_APPS", &list)]);
    assert_eq!(var, "DIFY_APPS");
    assert!(line.contains("DIFY_API_KEY"), "{line}");
}

#[test]
fn none_of_the_sources_names_the_key_variable() {
    let (_, var) = refusal(&[]);
    assert_eq!(var, "DIFY_API_KEY");
}

#[test]
fn each_malformed_entry_is_named_by_position_or_name_never_by_key() {
    let cases = [
        (format!("={KEY_A}"), "entry 1"),
        (format!("support={KEY_A},Sales={KEY_B}"), "entry 2"),
        (format!("support={KEY_A},-x={KEY_B}"), "entry 2"),
        (
            format!("support={KEY_A},{}={KEY_B}", "a".repeat(33)),
            "entry 2",
        ),
        (format!("support={KEY_A},support={KEY_B}"), "\"support\""),
        ("support=".to_owned(), "\"support\""),
        ("support=@http://dify.local/v1".to_owned(), "\"support\""),
        (format!("support={KEY_A}@not a url"), "\"support\""),
        (
            format!("support={KEY_A}@ftp://dify.local/v1"),
            "\"support\"",
        ),
        (format!("support={KEY_A},{KEY_B}"), "entry 2"),
        (format!("support={KEY_A},,sales={KEY_B}"), "entry 2"),
    ];
    for (value, named) in cases {
        let (line, var) = refusal(&[("DIFY_APPS", &value)]);
        assert_eq!(var, "DIFY_APPS", "{line}");
        assert!(line.contains(named), "{named:?} not in: {line}");
    }
}

#[test]
fn a_malformed_line_of_the_apps_file_is_named_by_its_number() {
    let f = file(&format!("# bots\nsupport={KEY_A}\n\nsupport={KEY_B}\n"));
    let (line, var) = refusal(&[("DIFY_APPS_FILE", f.path().to_str().unwrap())]);
    assert_eq!(var, "DIFY_APPS_FILE");
    assert!(line.contains("line 4"), "{line}");
}

#[test]
fn unreadable_or_empty_files_are_refused() {
    let (_, var) = refusal(&[("DIFY_APPS_FILE", "/no/such/apps")]);
    assert_eq!(var, "DIFY_APPS_FILE");
    let (_, var) = refusal(&[("DIFY_API_KEY_FILE", "/no/such/key")]);
    assert_eq!(var, "DIFY_API_KEY_FILE");
    let empty = file("\n");
    let (_, var) = refusal(&[("DIFY_API_KEY_FILE", empty.path().to_str().unwrap())]);
    assert_eq!(var, "DIFY_API_KEY_FILE");
    let comments = file("# nothing yet\n");
    let (_, var) = refusal(&[("DIFY_APPS_FILE", comments.path().to_str().unwrap())]);
    assert_eq!(var, "DIFY_APPS_FILE");
}

#[test]
fn app_names_are_path_segments() {
    for good in ["a", "support", "team-2", "0", &"a".repeat(32)] {
        assert!(is_app_name(good), "{good}");
    }
    for bad in [
        "",
        "-a",
        "Support",
        "a_b",
        "a.b",
        "a/b",
        "é",
        &"a".repeat(33),
    ] {
        assert!(!is_app_name(bad), "{bad}");
    }
}
