//! gRPC over TLS with authentication, as outside users call it: grpcurl
//! with `-cacert`, `-cert`/`-key` and `-H 'authorization: Bearer …'`, and
//! the Python client generated from `proto/`. Missing or bad credentials are
//! `UNAUTHENTICATED`, missing rights `PERMISSION_DENIED`; health stays open.

use std::path::{Path, PathBuf};

use jsonwebtoken::{EncodingKey, Header};
use mall_e2e::mall::{brokers, service_args};
use mall_e2e::{postgres, required_env, run, unique_name};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "a test secret that is long enough for HS256";
const AUDIENCE: &str = "mall";

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`: (ca, server cert, server key, client cert, client key).
fn certificates(dir: &Path) -> [PathBuf; 5] {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mall test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "order-service",
    );
    let (client_cert, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "ops");
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server.key", server_key),
        ("client.pem", client_cert),
        ("client.key", client_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    })
}

fn token(audience: &str, scope: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    let claims = serde_json::json!({"sub": "tester", "aud": audience, "scope": scope, "exp": exp});
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_tokens_certificates_and_rights_through_grpcurl_and_python() {
    platform_service::telemetry::init();
    let dir = std::env::temp_dir().join(unique_name("mall-tls-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(&dir);
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &brokers(), &prefix);
    args.grpc_tls_cert = Some(server_cert);
    args.grpc_tls_key = Some(server_key);
    args.grpc_tls_client_ca = Some(ca.clone());
    args.auth_jwt_secret = Some(SECRET.into());
    args.auth_jwt_audience = Some(AUDIENCE.into());
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("the order service starts with TLS and authentication");
    let addr = running.grpc_addr.to_string();
    let grpcurl = required_env("MALL_GRPCURL");
    let ca = ca.to_string_lossy().into_owned();
    let place = r#"{"customer_id":1,"product_id":1,"product_name":"TV","qty":1,"address":"Seoul"}"#;
    let call = |extra: &[&str], data: &str, method: &str| {
        let mut argv = vec!["-cacert", ca.as_str()];
        argv.extend_from_slice(extra);
        argv.extend(["-d", data, addr.as_str(), method]);
        run(&grpcurl, &argv)
    };
    let read = format!("authorization: Bearer {}", token(AUDIENCE, "read"));
    let placer = format!(
        "authorization: Bearer {}",
        token(AUDIENCE, "orders:place read")
    );
    let stranger = format!("authorization: Bearer {}", token("elsewhere", "*"));

    let (ok, said) = call(&[], "{}", "grpc.health.v1.Health/Check");
    assert!(ok && said.contains("SERVING"), "health is open: {said}");
    let (ok, said) = call(&[], r#"{"id":1}"#, "mall.order.v1.OrderService/GetOrder");
    assert!(
        !ok && said.contains("Unauthenticated") && said.contains("Bearer"),
        "{said}"
    );
    let (ok, said) = call(
        &["-H", &stranger],
        r#"{"id":1}"#,
        "mall.order.v1.OrderService/GetOrder",
    );
    assert!(
        !ok && said.contains("Unauthenticated") && said.contains("audience"),
        "{said}"
    );
    let (ok, said) = call(
        &["-H", &read],
        r#"{"id":424242}"#,
        "mall.order.v1.OrderService/GetOrder",
    );
    assert!(!ok && said.contains("NotFound"), "a reader reads: {said}");
    let (ok, said) = call(
        &["-H", &read],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        !ok && said.contains("PermissionDenied") && said.contains("orders:place"),
        "{said}"
    );
    let (ok, said) = call(
        &["-H", &placer],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(ok && said.contains("ORDER_STATUS_PENDING"), "{said}");
    let cert = client_cert.to_string_lossy().into_owned();
    let key = client_key.to_string_lossy().into_owned();
    let (ok, said) = call(
        &["-cert", &cert, "-key", &key],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        ok && said.contains("ORDER_STATUS_PENDING"),
        "a client certificate: {said}"
    );
    let (ok, said) = run(&grpcurl, &["-plaintext", &addr, "list"]);
    assert!(!ok, "plaintext is refused on a TLS port: {said}");

    let python = required_env("MALL_PYTHON");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/secure_client.py");
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let (ok, said) = run(
        &python,
        &[
            &script.to_string_lossy(),
            &protos.to_string_lossy(),
            &format!("127.0.0.1:{}", running.grpc_addr.port()),
            &ca,
            &cert,
            &key,
            &token(AUDIENCE, "read"),
            &token(AUDIENCE, "orders:place"),
        ],
    );
    assert!(ok && said.contains("secure python client OK"), "{said}");

    shutdown.cancel();
    running.wait().await.expect("a clean stop");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_without_an_audience_are_refused_at_start_up() {
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &brokers(), &prefix);
    args.auth_jwt_secret = Some(SECRET.into());
    let refused = match order_service::start(&args, CancellationToken::new()).await {
        Ok(_) => panic!("started without an audience"),
        Err(error) => error.to_string(),
    };
    assert!(refused.starts_with("AUTH_JWT_AUDIENCE"), "{refused}");
}
