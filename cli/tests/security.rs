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
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("RSKAFKA_SASL_PASSWORD"),
        "{}",
        text(&out.stderr)
    );
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
