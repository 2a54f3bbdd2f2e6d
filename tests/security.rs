//! Security on the real local stack: Kafka SASL (SCRAM-SHA-256/512, PLAIN) on the broker's
//! SASL_PLAINTEXT listener, a wrong password refused fast and clearly, and no secret (the SASL
//! password, a Mongo URI password) in any output, log or error message; TLS on the broker's SSL
//! listener with the local CA, and a certificate from another CA refused clearly.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestTopology;

/// The broker's SASL listener and its user, as `deploy/local/kafka/kafka-local.sh` sets them up.
fn sasl_brokers() -> String {
    std::env::var("OUTFLOW_KAFKA_SASL_BROKERS").unwrap_or_else(|_| "127.0.0.1:29094".into())
}
fn sasl_user() -> String {
    std::env::var("KAFKA_SASL_USER").unwrap_or_else(|_| "outflow".into())
}
fn right_password() -> String {
    std::env::var("KAFKA_SASL_PASSWORD").unwrap_or_else(|_| "outflow-local-secret".into())
}

/// Said when a secured listener does not answer: a broker started before they existed lacks them.
const HINT: &str = "a broker started by an older kafka-local.sh has no SASL/SSL listeners: \
                    `deploy/local/kafka/kafka-local.sh restart` adds them";

/// The line of pipeline.toml the security tests replace with their own `[kafka]` settings.
const BROKERS_LINE: &str = "brokers = \"${OUTFLOW_KAFKA_BROKERS:-127.0.0.1:29092}\"";

/// The variable the topology's `sasl.password = "${...}"` refers to.
const PASSWORD_VAR: &str = "OUTFLOW_TEST_SASL_PASSWORD";
const WRONG_PASSWORD: &str = "Wrong-Pa55word-9d1c";

/// The pipeline topology, talking SASL to the broker with `mechanism` and `password` (from the env).
fn sasl_topology(mechanism: &str, password: &str) -> TestTopology {
    let kafka = format!(
        "brokers = \"{}\"\nproperties = {{ \"security.protocol\" = \"SASL_PLAINTEXT\", \"sasl.mechanism\" = \"{mechanism}\", \"sasl.username\" = \"{}\", \"sasl.password\" = \"${{{PASSWORD_VAR}}}\" }}",
        sasl_brokers(),
        sasl_user()
    );
    TestTopology::edited_with_env(
        "pipeline.toml",
        &[(common::FAST_FAILOVER, ""), (BROKERS_LINE, &kafka)],
        &[(PASSWORD_VAR, password)],
    )
}

/// Runs `outflow <args>` to its end with `env`: (exit code, stdout + stderr, seconds taken).
fn outflow(args: &[&str], env: &[(&str, &str)]) -> (i32, String, f64) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_outflow"))
        .args(args)
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("outflow {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        text,
        started.elapsed().as_secs_f64(),
    )
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{what} shows the secret `{secret}`:\n{text}"
        );
    }
}

/// `validate` (text and JSON) and `validate --online` succeed over SASL and show no password.
fn validates_online(t: &TestTopology, mechanism: &str, password: &str) {
    let path = t.path.to_string_lossy().into_owned();
    let env = [(PASSWORD_VAR, password)];
    for args in [
        vec!["validate", path.as_str()],
        vec!["validate", "--format", "json", path.as_str()],
        vec!["validate", "--online", path.as_str()],
        vec!["validate", "--online", "--format", "json", path.as_str()],
    ] {
        let (code, out, _) = outflow(&args, &env);
        assert_eq!(code, 0, "{args:?} ({HINT}):\n{out}");
        assert_no_secret(&format!("{args:?}"), &out, &[password]);
        if args.contains(&"--online") && !args.contains(&"json") {
            assert!(out.contains("ok   kafka"), "{out}");
        }
    }
    let (_, summary, _) = outflow(&["validate", path.as_str()], &env);
    let security = format!("SASL_PLAINTEXT {mechanism} as `{}`", sasl_user());
    assert!(summary.contains(&security), "{security}: {summary}");
}

/// With the right password: validate --online passes, and events flow end to end over SASL
/// (test producer → source topic → outflow run → Mongo → relay → entity-updates), exactly once.
async fn right_password_flows(mechanism: &str) {
    let password = right_password();
    let t = sasl_topology(mechanism, &password);
    validates_online(&t, mechanism, &password);
    flows(&t, &[(PASSWORD_VAR, &password)], &[&password]).await;
}

/// Topics created, `outflow run` (debug log) and the test's producer all on `t`'s brokers and
/// settings: 20 quotes arrive exactly once, and the log shows none of `secrets`.
async fn flows(t: &TestTopology, env: &[(&str, &str)], secrets: &[&str]) {
    t.prepare().await; // topics created through the secured listener
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "debug"));
    let outflow = t.run_with_env(&[], &env);
    common::produce_quotes(t, 0..20).await;
    common::assert_exactly_once(t, 20).await;
    let log = outflow.log_text();
    assert!(
        log.contains("processor subscribed"),
        "outflow run came up on {}:\n{log}",
        t.topology.kafka.brokers
    );
    assert_no_secret("the debug log of outflow run", &log, secrets);
    let code = outflow.stop();
    assert_eq!(code, Some(0), "graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scram_sha_256_with_the_right_password_carries_events_exactly_once() {
    right_password_flows("SCRAM-SHA-256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_with_the_right_password_carries_events_exactly_once() {
    right_password_flows("PLAIN").await;
}

#[test]
fn scram_sha_512_with_the_right_password_validates_online() {
    let password = right_password();
    let t = sasl_topology("SCRAM-SHA-512", &password);
    validates_online(&t, "SCRAM-SHA-512", &password);
}

/// A wrong password: `validate --online` and `outflow run` fail fast, say which user and
/// mechanism were refused, and print neither the wrong nor the right password.
#[test]
fn a_wrong_password_is_refused_clearly_and_never_printed() {
    let right = right_password();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
        let t = sasl_topology(mechanism, WRONG_PASSWORD);
        let path = t.path.to_string_lossy().into_owned();
        let env = [(PASSWORD_VAR, WRONG_PASSWORD)];
        let refused = format!(
            "refused the credentials of user `{}` (SASL {mechanism}): authentication failed",
            sasl_user()
        );
        for format in ["text", "json"] {
            let (code, out, seconds) = outflow(
                &["validate", "--online", "--format", format, path.as_str()],
                &env,
            );
            assert_eq!(code, 1, "validate --online ({mechanism}, {format}):\n{out}");
            assert!(out.contains(&refused), "{mechanism} {format}:\n{out}");
            assert!(seconds < 5.0, "refused after {seconds:.1} s, not at once");
            assert_no_secret("validate --online", &out, &[WRONG_PASSWORD, right.as_str()]);
        }
        if mechanism == "SCRAM-SHA-256" {
            let started = Instant::now();
            let mut run = t.run_with_env(
                &[],
                &[(PASSWORD_VAR, WRONG_PASSWORD), ("RUST_LOG", "debug")],
            );
            let status = run.wait_exit(Duration::from_secs(60));
            let log = run.log_text();
            let status = status.unwrap_or_else(|| panic!("outflow run still running:\n{log}"));
            assert!(
                !status.success(),
                "outflow run exits non-zero: {status}\n{log}"
            );
            assert!(log.contains(&refused), "outflow run says why:\n{log}");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "outflow run failed after {:?}",
                started.elapsed()
            );
            assert_no_secret(
                "the debug log of outflow run",
                &log,
                &[WRONG_PASSWORD, right.as_str()],
            );
        }
    }
}

/// A Mongo URI with credentials (from the environment) pointing at a dead port: every output
/// names the host, none shows the password.
#[test]
fn a_mongo_password_never_appears_even_when_mongo_is_down() {
    let secret = "M0ngo-Secret-7f3e";
    let uri = format!(
        "mongodb://outflow:{secret}@127.0.0.1:1/?replicaSet=secantus&serverSelectionTimeoutMS=2000"
    );
    let env = [("OUTFLOW_MONGO_URI", uri.as_str())];
    let t = TestTopology::edited_with_env("pipeline.toml", &[], &env);
    let path = t.path.to_string_lossy().into_owned();
    for args in [
        vec!["validate", path.as_str()],
        vec!["validate", "--format", "json", path.as_str()],
    ] {
        let (code, out, _) = outflow(&args, &env);
        assert_eq!(code, 0, "{args:?}:\n{out}");
        assert!(out.contains("outflow:***@127.0.0.1:1"), "{out}");
        assert_no_secret(&format!("{args:?}"), &out, &[secret]);
    }
    let (code, out, _) = outflow(&["validate", "--online", path.as_str()], &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL mongo"), "{out}");
    assert!(
        out.contains("127.0.0.1:1"),
        "the error names the host:\n{out}"
    );
    assert_no_secret("validate --online", &out, &[secret]);

    let mut run = t.run_with_env(&[], &[env[0], ("RUST_LOG", "debug")]);
    let status = run.wait_exit(Duration::from_secs(60));
    let log = run.log_text();
    let status = status.unwrap_or_else(|| panic!("outflow run still running:\n{log}"));
    assert!(!status.success(), "{status}\n{log}");
    assert!(
        log.contains("127.0.0.1:1"),
        "the error names the host:\n{log}"
    );
    assert_no_secret("the debug log of outflow run", &log, &[secret]);
}

/// The broker's SSL listener and the CA that signed its certificate (kafka-local.sh makes both).
fn tls_topology(ca: &str) -> TestTopology {
    let brokers =
        std::env::var("OUTFLOW_KAFKA_TLS_BROKERS").unwrap_or_else(|_| "127.0.0.1:29095".into());
    let kafka = format!(
        "brokers = \"{brokers}\"\nproperties = {{ \"security.protocol\" = \"SSL\", \"ssl.ca.location\" = \"{ca}\" }}"
    );
    TestTopology::edited(
        "pipeline.toml",
        &[(common::FAST_FAILOVER, ""), (BROKERS_LINE, &kafka)],
    )
}

fn local_ca() -> String {
    std::env::var("OUTFLOW_KAFKA_TLS_CA").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/local/.run/kafka/tls/ca.pem"
        )
        .into()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_the_local_ca_carries_events_exactly_once() {
    let t = tls_topology(&local_ca());
    let path = t.path.to_string_lossy().into_owned();
    let (code, out, _) = outflow(&["validate", "--online", path.as_str()], &[]);
    assert_eq!(code, 0, "{HINT}:\n{out}");
    assert!(out.contains("ok   kafka"), "{out}");
    assert!(
        out.contains("; SSL)"),
        "the summary names the protocol: {out}"
    );
    flows(&t, &[], &[]).await;
}

/// A CA that never signed the broker's certificate: refused at once, and the message says TLS.
#[test]
fn a_broker_certificate_from_another_ca_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let other = dir.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not-the-brokers-ca", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(made.status.success(), "{made:?}");
    let t = tls_topology(&other.to_string_lossy());
    let path = t.path.to_string_lossy().into_owned();
    let refused = "TLS with the Kafka brokers at";
    let (code, out, seconds) = outflow(&["validate", "--online", path.as_str()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(refused), "{out}");
    assert!(out.contains("certificate verify failed"), "{out}");
    assert!(seconds < 5.0, "refused after {seconds:.1} s, not at once");

    let mut run = t.run_with_env(&[], &[]);
    let status = run.wait_exit(Duration::from_secs(60));
    let log = run.log_text();
    let status = status.unwrap_or_else(|| panic!("outflow run still running:\n{log}"));
    assert!(!status.success(), "{status}\n{log}");
    assert!(log.contains(refused), "outflow run says why:\n{log}");
}

/// A secret as the default of a `${VAR:-default}` is written in the file all the same: refused
/// (E014) like an inline one, and the value is not echoed.
#[test]
fn a_secret_hidden_in_a_default_is_refused() {
    let root = env!("CARGO_MANIFEST_DIR");
    let minimal = std::fs::read_to_string(format!("{root}/tests/topologies/minimal.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("../../schemas/", &format!("{root}/schemas/"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    for (from, to) in [
        (
            "brokers = \"127.0.0.1:29092\"",
            "brokers = \"127.0.0.1:29092\"\nproperties = { \"sasl.password\" = \"${OUTFLOW_UNSET_1:-Hidden-Default-1}\" }",
        ),
        (
            "uri = \"mongodb://127.0.0.1:28017/?replicaSet=secantus\"",
            "uri = \"${OUTFLOW_UNSET_2:-mongodb://app:Hidden-Default-1@127.0.0.1:28017/}\"",
        ),
    ] {
        assert!(minimal.contains(from), "minimal.toml has no `{from}`");
        let path = dir.path().join("topology.toml");
        std::fs::write(&path, minimal.replace(from, to)).unwrap_or_else(|e| panic!("{e}"));
        let path = path.to_string_lossy().into_owned();
        for format in ["text", "json"] {
            let (code, out, _) = outflow(&["validate", "--format", format, path.as_str()], &[]);
            assert_eq!(code, 78, "{out}");
            assert!(out.contains("E014"), "{out}");
            assert_no_secret("validate", &out, &["Hidden-Default-1"]);
        }
    }
}
