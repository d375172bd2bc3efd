//! Bad input at the command line: one line, non-zero exit, no panic.

use std::process::Command;

fn spillway() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spillway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SPILLWAY_")
            || ["DB_DSN", "SLOT_NAME", "PUBLICATION_NAME", "TABLE_FILTER"].contains(&k.as_str())
        {
            c.env_remove(k);
        }
    }
    c
}

fn assert_one_line_failure(out: std::process::Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        lines[0].contains(needle),
        "`{}` does not mention `{needle}`",
        lines[0]
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_config_file() {
    let out = spillway()
        .args(["run", "--config", "/nonexistent/spillway.toml"])
        .output()
        .unwrap();
    assert_one_line_failure(out, "/nonexistent/spillway.toml");
}

#[test]
fn unknown_key_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spillway.toml");
    std::fs::write(
        &f,
        "[source]\ndsn = \"postgres://postgres@127.0.0.1:1/shop\"\nslott = \"x\"\n",
    )
    .unwrap();
    let out = spillway()
        .args(["run", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_one_line_failure(out, "slott");
}

#[test]
fn malformed_value() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("spillway.toml");
    std::fs::write(&f, "[source]\ndsn = \"postgres://postgres@127.0.0.1:1/shop\"\n[api]\nlisten = \"everywhere\"\n").unwrap();
    let out = spillway()
        .args(["run", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert_one_line_failure(out, "api.listen");
}

#[test]
fn bad_dsn() {
    let out = spillway()
        .args(["run"])
        .env("SPILLWAY_SOURCE_DSN", "postgres://u@host:notaport/db")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_one_line_failure(out, "port");
}

#[test]
fn unreachable_server_is_one_line() {
    let port = spillway_testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = spillway()
        .args(["run"])
        .env(
            "DB_DSN",
            format!("postgres://postgres@127.0.0.1:{port}/shop"),
        )
        .env("SPILLWAY_LOG_DIR", dir.path().join("log"))
        .env("SPILLWAY_API_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_one_line_failure(out, &format!("127.0.0.1:{port}"));
}

#[test]
fn unknown_environment_variable() {
    let out = spillway()
        .args(["run"])
        .env("SPILLWAY_SOURCE_DNS", "x")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_one_line_failure(out, "SPILLWAY_SOURCE_DNS");
}
