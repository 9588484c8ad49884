//! The real `huggingface_hub` client against the gateway: runs `tests/hf_client.py`.
//!
//! The gateway is started as the binary starts it (`run_gateway`, API keys on); the private
//! repository is read with a real API key passed as `token`, and refused without one or with a
//! wrong one.
//!
//! Fails (does not skip) when `huggingface_hub` is not importable: install it with
//! `scripts/test.sh`, which puts the pinned clients of `tests/requirements.txt` first on `PATH`.

use std::time::Duration;

use crate::auth::Keyed;
use crate::{DATASET, Fixture, MODEL, PRIVATE, fixture_dir};

/// Time the client script may take (seconds here); past it the script is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time the import probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// The client script checks with `require(...)`, which raises; a bare `assert` is dropped by
/// Python under `-O` or `PYTHONOPTIMIZE`, and its check would then always pass.
#[test]
fn hf_client_checks_are_not_bare_asserts() {
    let script = include_str!("../hf_client.py");
    let bare: Vec<(usize, &str)> = script
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            t.starts_with("assert ") || t.starts_with("assert(")
        })
        .map(|(i, l)| (i + 1, l))
        .collect();
    assert!(bare.is_empty(), "bare asserts in hf_client.py: {bare:?}");
    assert!(
        script.contains("def require("),
        "hf_client.py lost its require()"
    );
}

/// Fails the test unless `huggingface_hub` is importable by `python3`.
async fn require_huggingface_hub() {
    let mut probe = tokio::process::Command::new("python3");
    probe
        .args(["-c", "import huggingface_hub"])
        .kill_on_drop(true);
    let probe = tokio::time::timeout(PROBE_TIMEOUT, probe.output())
        .await
        .expect("importing huggingface_hub took over a minute")
        .expect("python3 must be installed to run the Hugging Face client test");
    assert!(
        probe.status.success(),
        "huggingface_hub is not importable by python3; run the tests with scripts/test.sh, which installs it \
         (this test runs the real client and must not be skipped): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// Runs `hf_client.py` against the gateway of `kg` with `env` added; returns its output.
async fn run_hf_client(
    fx: &Fixture,
    kg: &Keyed,
    key: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hf_client.py");
    let mut py = tokio::process::Command::new("python3");
    py.arg(script)
        .env("CAIRN_GATEWAY_URL", &kg.url)
        .env("CAIRN_PRIVATE_TOKEN", key)
        .env("CAIRN_FIXTURE_DIR", fixture_dir(fx))
        .env("CAIRN_MODEL_REPO", MODEL)
        .env("CAIRN_DATASET_REPO", DATASET)
        .env("CAIRN_PRIVATE_REPO", PRIVATE)
        .env("CAIRN_COMMIT", fx.commit.to_string())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("REQUESTS_CA_BUNDLE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(SCRIPT_TIMEOUT, py.output())
        .await
        .unwrap_or_else(|_| panic!("hf_client.py did not finish in {SCRIPT_TIMEOUT:?}"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huggingface_hub_client() {
    require_huggingface_hub().await;
    let fx = Fixture::start(2_500_000).await;
    let kg = Keyed::start(&fx).await;
    let key = kg.key(&["read:repo:cairn-test/private"]).await;
    let out = run_hf_client(&fx, &kg, &key.key, &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "hf_client.py failed:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains(&key.key[23..]) && !stderr.contains(&key.key[23..]));
    let audit = kg.admin.audit(1000).await.unwrap();
    assert!(audit.iter().any(|e| e.key_id == key.id && e.status == 200));
    kg.shutdown().await;
    fx.shutdown().await;
}

/// The same unmodified client over HTTPS: it trusts the gateway's CA through `SSL_CERT_FILE`
/// (what `cairn devnet --tls` prints) and passes every check of `hf_client.py`, the private
/// repository read with a key; without the CA it gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huggingface_hub_client_over_https() {
    require_huggingface_hub().await;
    let tmp = tempfile::tempdir().unwrap();
    let tls = cairn_gateway::write_local_tls(tmp.path(), Duration::from_secs(3600)).unwrap();
    let fx = Fixture::start(2_500_000).await;
    let config = cairn_gateway::GatewayConfig {
        tls: Some(tls.files.clone()),
        ..Default::default()
    };
    let kg = Keyed::start_with(&fx, config).await;
    assert!(kg.url.starts_with("https://127.0.0.1:"), "{}", kg.url);
    let key = kg.key(&["read:repo:cairn-test/private"]).await;
    let ca = tls.ca_cert.to_str().unwrap();
    let out = run_hf_client(&fx, &kg, &key.key, &[("SSL_CERT_FILE", ca)]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hf_client.py over HTTPS failed:\n{stdout}\n{stderr}"
    );
    // Without the CA: the handshake fails, the client reports a certificate error. (One call:
    // downloads retry a refused connection for half a minute before they give up.)
    let mut py = tokio::process::Command::new("python3");
    py.args([
        "-c",
        &format!("from huggingface_hub import HfApi\nHfApi().model_info({PRIVATE:?})"),
    ])
    .env("HF_ENDPOINT", &kg.url)
    .env("HF_TOKEN", &key.key)
    .env("HF_HOME", tmp.path().join("hf-home"))
    .env("NO_PROXY", "127.0.0.1,localhost")
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR")
    .env_remove("REQUESTS_CA_BUNDLE")
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, py.output())
        .await
        .expect("model_info finished")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a client that does not trust the CA read the gateway"
    );
    assert!(
        stderr.contains("CERTIFICATE_VERIFY_FAILED"),
        "not a certificate error:\n{stderr}"
    );
    assert!(!stderr.contains(&key.key[23..]));
    let audit = kg.admin.audit(1000).await.unwrap();
    assert_eq!(
        audit.iter().filter(|e| e.key_id == key.id).count(),
        audit
            .iter()
            .filter(|e| e.key_id == key.id && e.status == 200)
            .count(),
        "the untrusting client's key reached the gateway"
    );
    kg.shutdown().await;
    fx.shutdown().await;
}
