//! TLS on the serving port, as an operator runs it (`tern serve --tls-cert --tls-key
//! [--tls-client-ca] --health-addr`), against certificates made here (rcgen): TLS and
//! mutual TLS accepted, the wrong CA or a missing client certificate refused, a rotated
//! certificate picked up without a restart or a dropped connection, a broken rotation
//! never replacing a working certificate, and plaintext health checks beside TLS.

use std::path::Path;
use std::process::Command;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::daemon::{Daemon, small_repo};
use crate::redis_support::tls::{TestPki, write_test_pki};
use crate::support::*;

/// A throwaway PKI in its own folder under `dir`.
fn pki_in(dir: &Path, name: &str) -> TestPki {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("pki folder");
    write_test_pki(&folder)
}

/// A request the small synthetic repo answers.
fn request() -> tern::proto::tern::wire::GetOnlineFeaturesRequest {
    refs_request(&["bench:f0"], vec![("driver_id", vec![int64(1)])])
}

/// A TLS channel to `addr` trusting `ca`, with a client certificate if given.
async fn tls_channel(
    addr: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")));
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("cert"),
            std::fs::read(key).expect("key"),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("url")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
}

/// Connects and asks for one row; the error text when either fails.
async fn tls_call(addr: &str, ca: &Path, client: Option<(&Path, &Path)>) -> Result<(), String> {
    let ch = tls_channel(addr, ca, client)
        .await
        .map_err(|e| format!("{e:?}"))?;
    call(&ch, Route::Serving, request())
        .await
        .map(drop)
        .map_err(|s| format!("{s:?}"))
}

/// `tern serve` on the small repo with TLS from `pki` and `extra` flags; its main
/// and (plaintext) health addresses.
fn serve_tls(yaml: &Path, pki: &TestPki, extra: &[&str]) -> (Daemon, String, String) {
    let mut args = vec![
        "serve",
        "--config",
        yaml.to_str().expect("utf-8"),
        "--grpc-addr",
        "127.0.0.1:0",
        "--health-addr",
        "127.0.0.1:0",
        "--tls-cert",
        pki.server_cert.to_str().expect("utf-8"),
        "--tls-key",
        pki.server_key.to_str().expect("utf-8"),
        "--log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    let mut daemon = Daemon::spawn_with_env(&args, &[]);
    let health = daemon.wait_for_log("serving gRPC health checks (plaintext)");
    let health = health["addr"].as_str().expect("addr").to_owned();
    let serving = daemon.wait_for_log("serving gRPC");
    assert_eq!(serving["tls"], true, "{serving}");
    let addr = serving["addr"].as_str().expect("addr").to_owned();
    (daemon, addr, health)
}

fn tern(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env_remove("TERN_ADDR")
        .env_remove("TERN_TLS_CA")
        .output()
        .expect("run tern");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn tls_serves_trusting_clients_and_refuses_others() {
    let (dir, _repo, yaml) = small_repo();
    let pki = pki_in(dir.path(), "pki");
    let stranger = pki_in(dir.path(), "other");
    let (mut daemon, addr, health) = serve_tls(&yaml, &pki, &[]);

    tls_call(&addr, &pki.ca, None)
        .await
        .expect("a client trusting the server's CA is served");
    let untrusted = tls_call(&addr, &stranger.ca, None)
        .await
        .expect_err("a client trusting another CA refuses the server");
    assert!(untrusted.contains("InvalidCertificate"), "{untrusted}");
    let plaintext = call(
        &channel(&format!("http://{addr}")).await,
        Route::Serving,
        request(),
    )
    .await;
    assert!(
        plaintext.is_err(),
        "plaintext on the TLS port: {plaintext:?}"
    );

    // Kubernetes' gRPC probes speak plaintext to the health port.
    let status = HealthClient::new(channel(&format!("http://{health}")).await)
        .check(HealthCheckRequest::default())
        .await
        .expect("health over plaintext")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // The command-line clients speak TLS too.
    let ca = pki.ca.to_str().expect("utf-8");
    let (code, out) = tern(&["health", "--addr", &addr, "--tls-ca", ca]);
    assert_eq!((code, out.as_str()), (Some(0), "SERVING\n"));
    let (code, out) = tern(&[
        "get",
        "--addr",
        &format!("https://{addr}"),
        "--tls-ca",
        ca,
        "--features",
        "bench:f0",
        "--entity",
        "driver_id=1",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("driver_id"), "{out}");
    let (code, out) = tern(&[
        "health",
        "--addr",
        &format!("http://{addr}"),
        "--tls-ca",
        ca,
    ]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("is plaintext but TLS options were given: use https://"),
        "{out}"
    );
    assert!(daemon.terminate().await.success());
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let (dir, _repo, yaml) = small_repo();
    let pki = pki_in(dir.path(), "pki");
    let stranger = pki_in(dir.path(), "other");
    let (mut daemon, addr, _health) = serve_tls(
        &yaml,
        &pki,
        &["--tls-client-ca", pki.ca.to_str().expect("utf-8")],
    );

    tls_call(&addr, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .expect("a client certificate from the client CA is accepted");
    let anonymous = tls_call(&addr, &pki.ca, None).await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let foreign = tls_call(
        &addr,
        &pki.ca,
        Some((&stranger.client_cert, &stranger.client_key)),
    )
    .await;
    assert!(
        foreign.is_err(),
        "a client certificate from another CA: {foreign:?}"
    );
    let refused = daemon.wait_for_log("TLS handshake failed");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("certificate")),
        "{refused}"
    );

    let flags = |with_cert: bool| {
        let mut args = vec![
            "health".to_owned(),
            "--addr".to_owned(),
            addr.clone(),
            "--tls-ca".to_owned(),
            pki.ca.display().to_string(),
        ];
        if with_cert {
            args.extend([
                "--tls-cert".to_owned(),
                pki.client_cert.display().to_string(),
                "--tls-key".to_owned(),
                pki.client_key.display().to_string(),
            ]);
        }
        args
    };
    let run = |v: Vec<String>| tern(&v.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run(flags(true)).0, Some(0));
    let (code, out) = run(flags(false));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.trim_end().lines().count(), 1, "{out}");
    assert!(daemon.terminate().await.success());
}

/// A new certificate written over the files is served from the next handshake on
/// (on SIGHUP here; the files are also polled), connections already open keep
/// working, and a broken rotation leaves the working certificate in place.
#[tokio::test]
async fn rotated_certificates_are_picked_up_without_a_restart() {
    let (dir, _repo, yaml) = small_repo();
    let pki = pki_in(dir.path(), "pki");
    let next = pki_in(dir.path(), "next");
    let (mut daemon, addr, _health) = serve_tls(&yaml, &pki, &[]);
    let before = tls_channel(&addr, &pki.ca, None).await.expect("connect");
    call(&before, Route::Serving, request())
        .await
        .expect("served");

    // The key first, then the certificate: between the two the pair does not match,
    // and the poll may see it so; the complete pair must win.
    std::fs::copy(&next.server_key, &pki.server_key).expect("new key");
    std::fs::copy(&next.server_cert, &pki.server_cert).expect("new cert");
    daemon.hangup();
    daemon.wait_for_log("TLS certificates reloaded");
    tls_call(&addr, &next.ca, None)
        .await
        .expect("the new certificate is served");
    let old = tls_call(&addr, &pki.ca, None).await;
    assert!(old.is_err(), "the old certificate is gone: {old:?}");
    call(&before, Route::Serving, request())
        .await
        .expect("a connection from before the rotation still works");

    std::fs::write(&pki.server_cert, "not a certificate").expect("break the cert");
    daemon.hangup();
    let failed =
        daemon.wait_for_log("TLS certificates not reloaded; still serving the previous ones");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains(&pki.server_cert.display().to_string())),
        "names the file: {failed}"
    );
    tls_call(&addr, &next.ca, None)
        .await
        .expect("the working certificate still serves");
    drop(before);
    assert!(daemon.terminate().await.success());
}

#[tokio::test]
async fn unusable_tls_files_stop_start_up_naming_the_file() {
    let (dir, _repo, yaml) = small_repo();
    let pki = pki_in(dir.path(), "pki");
    let other = pki_in(dir.path(), "other");
    let serve = |cert: &Path, key: &Path| {
        tern(&[
            "serve",
            "--config",
            yaml.to_str().expect("utf-8"),
            "--grpc-addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ])
    };
    let missing = dir.path().join("missing.pem");
    let (code, out) = serve(&missing, &pki.server_key);
    assert_eq!(code, Some(1));
    assert!(
        out.contains(&format!("cannot read --tls-cert {}", missing.display())),
        "{out}"
    );
    let (code, out) = serve(&pki.server_cert, &other.server_key);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("TLS configuration from"),
        "a key that is not the certificate's: {out}"
    );
    let (code, out) = serve(&pki.server_key, &pki.server_key);
    assert_eq!(code, Some(1));
    assert!(out.contains("holds no CERTIFICATE block"), "{out}");
}
