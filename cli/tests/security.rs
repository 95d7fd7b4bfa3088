//! The security flags of the `rskafka` binary against the secured
//! listeners of `KAFKA_SECURITY=1 scripts/kafka up` (`KAFKA_SASL_PLAINTEXT`,
//! `KAFKA_SASL_SSL`, `KAFKA_SSL`, `KAFKA_CA_FILE`, `KAFKA_CLIENT_CERT`,
//! `KAFKA_CLIENT_KEY`); each test skips when its variables are unset.

use std::{
    process::Output,
    time::{Duration, Instant},
};

mod common;

use common::{binary, env_or_skip as env, run_bounded};

/// Runs the binary, killing it (and failing) after `limit`.
fn run(args: &[&str], password: Option<&str>, limit: Duration) -> Output {
    let mut cmd = binary();
    cmd.args(args).env_remove("RSKAFKA_SASL_PASSWORD");
    if let Some(p) = password {
        cmd.env("RSKAFKA_SASL_PASSWORD", p);
    }
    run_bounded(cmd, None, limit)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn sasl_mechanisms_over_plaintext_and_tls() {
    let (Some(plain), Some(ssl), Some(ca)) = (
        env("KAFKA_SASL_PLAINTEXT"),
        env("KAFKA_SASL_SSL"),
        env("KAFKA_CA_FILE"),
    ) else {
        return;
    };
    for mech in ["PLAIN", "scram-sha-256", "SCRAM-SHA-512"] {
        // The password on the command line, over SASL_PLAINTEXT.
        let out = run(
            &[
                "--brokers",
                &plain,
                "--sasl-mechanism",
                mech,
                "--sasl-username",
                "alice",
                "--sasl-password",
                "alice-secret",
                "metadata",
            ],
            None,
            LIMIT,
        );
        assert!(out.status.success(), "{mech}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("broker"),
            "{}",
            text(&out.stdout)
        );
        // The password from the environment, over SASL_SSL.
        let out = run(
            &[
                "--brokers",
                &ssl,
                "--ca-file",
                &ca,
                "--sasl-mechanism",
                mech,
                "--sasl-username",
                "alice",
                "topic",
                "list",
            ],
            Some("alice-secret"),
            LIMIT,
        );
        assert!(out.status.success(), "{mech}: {}", text(&out.stderr));
    }
}

#[test]
fn wrong_password_fails_quickly_with_an_authentication_error() {
    let Some(plain) = env("KAFKA_SASL_PLAINTEXT") else {
        return;
    };
    let t0 = Instant::now();
    let out = run(
        &[
            "--brokers",
            &plain,
            "--sasl-mechanism",
            "SCRAM-SHA-256",
            "--sasl-username",
            "alice",
            "topic",
            "list",
        ],
        Some("wrong"),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("SASL_AUTHENTICATION_FAILED"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );

    // No password at all is caught before connecting.
    let out = run(
        &[
            "--brokers",
            &plain,
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "alice",
            "metadata",
        ],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        text(&out.stderr).contains("RSKAFKA_SASL_PASSWORD"),
        "{}",
        text(&out.stderr)
    );
}

/// An unsigned JWT for `sub`, expiring `exp` seconds after the epoch (the
/// test broker's default OAUTHBEARER validator takes unsigned tokens).
fn unsecured_jwt(sub: &str, exp: i64) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"{sub}","iat":0,"exp":{exp}}}"#))
    )
}

/// Issue #21: OAUTHBEARER on the command line, with a token file (read at
/// each authentication) and with librdkafka's unsecured tokens through
/// `-X`; an expired token fails with one line and exit 1, a missing token
/// is a usage error (exit 2).
#[test]
fn oauthbearer_with_a_token_file_and_with_unsecured_tokens() {
    let Some(plain) = env("KAFKA_SASL_PLAINTEXT") else {
        return;
    };
    let dir = std::env::temp_dir().join(common::unique("cli-oauth"));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let token_path = token_file.to_str().unwrap();
    let with_file = [
        "--brokers",
        &plain,
        "--sasl-mechanism",
        "OAUTHBEARER",
        "--sasl-oauthbearer-token-file",
        token_path,
        "topic",
        "list",
    ];

    std::fs::write(&token_file, unsecured_jwt("alice", now + 3600)).unwrap();
    let out = run(&with_file, None, LIMIT);
    assert!(out.status.success(), "token file: {}", text(&out.stderr));

    std::fs::write(&token_file, unsecured_jwt("alice", now - 60)).unwrap();
    let out = run(&with_file, None, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.to_lowercase().contains("expired"), "{err}");

    let out = run(
        &[
            "--brokers",
            &plain,
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanisms=OAUTHBEARER",
            "-X",
            "enable.sasl.oauthbearer.unsecure.jwt=true",
            "-X",
            "sasl.oauthbearer.config=principal=alice lifeSeconds=600",
            "metadata",
        ],
        None,
        LIMIT,
    );
    assert!(out.status.success(), "unsecured: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("broker"),
        "{}",
        text(&out.stdout)
    );

    for args in [
        vec!["--sasl-mechanism", "OAUTHBEARER", "metadata"],
        vec![
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            "sasl.mechanism=OAUTHBEARER",
            "metadata",
        ],
    ] {
        let mut all = vec!["--brokers", plain.as_str()];
        all.extend(args);
        let out = run(&all, None, LIMIT);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{}",
            text(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_and_mutual_tls() {
    let (Some(ssl), Some(plain), Some(ca), Some(cert), Some(key)) = (
        env("KAFKA_SSL"),
        env("KAFKA_BOOTSTRAP"),
        env("KAFKA_CA_FILE"),
        env("KAFKA_CLIENT_CERT"),
        env("KAFKA_CLIENT_KEY"),
    ) else {
        return;
    };
    let out = run(
        &[
            "--brokers",
            &ssl,
            "--ca-file",
            &ca,
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "metadata",
        ],
        None,
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The system CAs do not know the test CA (or there are none).
    let out = run(&["--brokers", &ssl, "--tls", "metadata"], None, LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown issuer") || err.contains("system store"),
        "{err}"
    );

    // TLS against the plaintext listener says what is wrong.
    let out = run(
        &["--brokers", &plain, "--ca-file", &ca, "metadata"],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is this a plaintext listener?"),
        "{}",
        text(&out.stderr)
    );

    // A certificate without its key is a usage error.
    let out = run(
        &["--brokers", &ssl, "--cert-file", &cert, "metadata"],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// Runs a command that must get past argument parsing and fail only at
/// connecting (nothing listens on port 1), and checks `secret` shows
/// nowhere in its output.
#[track_caller]
fn fails_at_connect_without_showing(args: &[&str], env_password: Option<&str>, secret: &str) {
    // A short timeout: connecting is retried until it passes.
    let mut all = vec!["--brokers", "127.0.0.1:1", "--timeout-ms", "300"];
    all.extend_from_slice(args);
    let out = run(&all, env_password, LIMIT);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: not taken as the password value: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr:?}");
    assert!(
        !stdout.contains(secret) && !stderr.contains(secret),
        "{args:?} shows the password: {stderr:?}"
    );
}

#[test]
fn passwords_of_any_shape_are_taken_and_never_shown() {
    // Leading hyphens, flag and subcommand names, spaces, quotes, newlines,
    // non-ASCII: each must be the password, not an argument clap complains
    // about (and so prints).
    let shapes = [
        "--s3cret",
        "-abc",
        "-- secret",
        "--",
        "-",
        "-V",
        "--help",
        "--sasl-password",
        "metadata",
        "topic",
        "two words",
        "quo'te\"d",
        "new\nline",
        "pässwörd✓",
        "=starts-with-equals",
    ];
    for secret in shapes {
        let base = ["--sasl-mechanism", "PLAIN", "--sasl-username", "alice"];
        // Separate argument, before and after the subcommand.
        let mut args = base.to_vec();
        args.extend(["--sasl-password", secret, "metadata"]);
        fails_at_connect_without_showing(&args, None, secret_to_check(secret));
        let mut args = base.to_vec();
        args.extend(["topic", "list", "--sasl-password", secret]);
        fails_at_connect_without_showing(&args, None, secret_to_check(secret));
        // --sasl-password=VALUE.
        let joined = format!("--sasl-password={secret}");
        let mut args = base.to_vec();
        args.extend([joined.as_str(), "metadata"]);
        fails_at_connect_without_showing(&args, None, secret_to_check(secret));
        // From the environment.
        let mut args = base.to_vec();
        args.push("metadata");
        fails_at_connect_without_showing(&args, Some(secret), secret_to_check(secret));
    }
}

/// The part of a password a test can look for in output: one or two
/// hyphens also occur in the texts around it.
fn secret_to_check(secret: &str) -> &str {
    match secret {
        "-" | "--" | "-V" => "\u{0}never printed\u{0}",
        s => s,
    }
}

#[test]
fn passwords_are_redacted_from_every_error_line() {
    // Runtime errors: here the broker address (127.0.0.1:1, as
    // fails_at_connect_without_showing gives) happens to be the password.
    fails_at_connect_without_showing(
        &[
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "alice",
            "--sasl-password",
            "127.0.0.1:1",
            "metadata",
        ],
        None,
        "127.0.0.1:1",
    );
    fails_at_connect_without_showing(
        &[
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "alice",
            "metadata",
        ],
        Some("127.0.0.1:1"),
        "127.0.0.1:1",
    );
    // Usage errors that quote an argument which is also the password (a
    // password pasted in the wrong place).
    let cases: [(&[&str], Option<&str>); 4] = [
        (
            &[
                "--sasl-password",
                "zz-secret-zz",
                "--sasl-mechanism",
                "zz-secret-zz",
                "metadata",
            ],
            None,
        ),
        (&["--sasl-password=zz-secret-zz", "zz-secret-zz"], None),
        (&["zz-secret-zz"], Some("zz-secret-zz")),
        (
            &["consume", "t", "--from", "zz-secret-zz"],
            Some("zz-secret-zz"),
        ),
    ];
    for (args, env_password) in cases {
        let out = run(args, env_password, LIMIT);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr:?}");
        assert!(
            !stdout.contains("zz-secret-zz") && !stderr.contains("zz-secret-zz"),
            "{args:?} shows the password: {stderr:?}"
        );
    }
}

#[test]
fn help_does_not_show_a_password_from_the_environment() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["metadata", "--help"],
        &["produce", "--help"],
        &["--version"],
    ] {
        let out = run(args, Some("zz-env-secret-zz"), LIMIT);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!all.contains("zz-env-secret-zz"), "{args:?}: {all}");
    }
}
