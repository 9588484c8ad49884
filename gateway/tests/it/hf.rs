//! The real `huggingface_hub` client against the gateway: runs `tests/hf_client.py`.
//!
//! Fails (does not skip) when `huggingface_hub` is not importable: install it with
//! `pip install huggingface_hub`.

use crate::{DATASET, Fixture, MODEL, PRIVATE, fixture_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huggingface_hub_client() {
    let probe = tokio::process::Command::new("python3")
        .args(["-c", "import huggingface_hub"])
        .output()
        .await
        .expect("python3 must be installed to run the Hugging Face client test");
    assert!(
        probe.status.success(),
        "huggingface_hub is not importable by python3; run `pip install huggingface_hub` \
         (this test runs the real client and must not be skipped): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let fx = Fixture::start(2_500_000).await;
    fx.add_private();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hf_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("CAIRN_GATEWAY_URL", &fx.url)
        .env("CAIRN_FIXTURE_DIR", fixture_dir(&fx))
        .env("CAIRN_MODEL_REPO", MODEL)
        .env("CAIRN_DATASET_REPO", DATASET)
        .env("CAIRN_PRIVATE_REPO", PRIVATE)
        .env("CAIRN_COMMIT", fx.commit.to_string())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "hf_client.py failed:\n{stdout}\n{stderr}"
    );
    fx.shutdown().await;
}
