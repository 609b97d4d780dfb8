//! gRPC over TLS with authentication, as outside users call it: grpcurl
//! with `-cacert`, `-cert`/`-key` and `-H 'authorization: Bearer …'`, and
//! the Python client generated from `proto/`. Missing or bad credentials are
//! `UNAUTHENTICATED`, missing rights `PERMISSION_DENIED`; health stays open,
//! reflection needs credentials. Tokens: issuer, audience, `nbf`, lifetime,
//! the wildcard scope, a key set picked by `kid` and rotated without a
//! restart, a claim that binds a token to a customer. Certificates: rights
//! by identity, none by default. And the start-up refusals: a short HS256
//! secret, no audience, no credentials on an address other than loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
const ISSUER: &str = "https://issuer.mall.test";

/// A CA, a server certificate for 127.0.0.1 and two client certificates
/// (CN `ops`, CN `random`), as PEM files in `dir`: (ca, server cert, server
/// key, ops cert, ops key, random cert, random key).
fn certificates(dir: &Path) -> [PathBuf; 7] {
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
    let (random_cert, random_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth, "random");
    let files = [
        ("ca.pem", ca.pem()),
        ("server.pem", server_cert),
        ("server.key", server_key),
        ("client.pem", client_cert),
        ("client.key", client_key),
        ("random.pem", random_cert),
        ("random.key", random_key),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A token with the claims of a well-behaved issuer, changed by `more`.
fn signed(scope: &str, more: serde_json::Value, kid: Option<&str>, secret: &[u8]) -> String {
    let mut claims = serde_json::json!({"sub": "tester", "iss": ISSUER, "aud": AUDIENCE,
                                        "scope": scope, "exp": now() + 600});
    if let (Some(claims), Some(more)) = (claims.as_object_mut(), more.as_object()) {
        claims.extend(more.clone());
    }
    let header = Header {
        kid: kid.map(str::to_owned),
        ..Header::default()
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).expect("sign a token")
}

fn token(audience: &str, scope: &str) -> String {
    signed(
        scope,
        serde_json::json!({"aud": audience}),
        None,
        SECRET.as_bytes(),
    )
}

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}")
}

/// A JWKS file holding one HS256 key, `kid`, whose secret is `secret`.
fn key_set(path: &Path, kid: &str, secret: &[u8]) {
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    std::fs::write(
        path,
        format!(r#"{{"keys":[{{"kty":"oct","kid":"{kid}","alg":"HS256","k":"{k}"}}]}}"#),
    )
    .expect("write the key set");
}

/// grpcurl against `addr` with the CA: `extra` flags, then `-d data addr method`.
struct Grpcurl {
    binary: String,
    ca: String,
    addr: String,
}

impl Grpcurl {
    fn call(&self, extra: &[&str], data: &str, method: &str) -> (bool, String) {
        let mut argv = vec!["-cacert", self.ca.as_str()];
        argv.extend_from_slice(extra);
        argv.extend(["-d", data, self.addr.as_str(), method]);
        run(&self.binary, &argv)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_tokens_certificates_and_rights_through_grpcurl_and_python() {
    platform_service::telemetry::init();
    let dir = std::env::temp_dir().join(unique_name("mall-tls-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let [
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
        random_cert,
        random_key,
    ] = certificates(&dir);
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &brokers(), &prefix);
    args.grpc_tls_cert = Some(server_cert);
    args.grpc_tls_key = Some(server_key);
    args.grpc_tls_client_ca = Some(ca.clone());
    args.auth_client_cert_rights = "ops=orders:place orders:read".into();
    args.auth_jwt_secret = Some(SECRET.into());
    args.auth_jwt_audience = Some(AUDIENCE.into());
    args.auth_jwt_issuer = Some(ISSUER.into());
    args.auth_jwt_max_lifetime = Duration::from_secs(3_600);
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("the order service starts with TLS and authentication");
    let grpcurl = Grpcurl {
        binary: required_env("MALL_GRPCURL"),
        ca: ca.to_string_lossy().into_owned(),
        addr: running.grpc_addr.to_string(),
    };
    let place = r#"{"customer_id":1,"product_id":1,"product_name":"TV","qty":1,"address":"Seoul"}"#;
    let get = |id: i64| format!(r#"{{"id":{id}}}"#);
    let read = bearer(&token(AUDIENCE, "orders:read"));
    let anyone = bearer(&token(AUDIENCE, ""));
    let placer = bearer(&token(AUDIENCE, "orders:place orders:read"));
    let stranger = bearer(&token("elsewhere", "orders:read"));

    // Health is open: the call itself carries no credentials (only the
    // reflection grpcurl asks first does, with -reflect-header).
    let (ok, said) = grpcurl.call(
        &["-reflect-header", &anyone],
        "{}",
        "grpc.health.v1.Health/Check",
    );
    assert!(ok && said.contains("SERVING"), "health is open: {said}");
    let (ok, said) = grpcurl.call(&[], &get(1), "mall.order.v1.OrderService/GetOrder");
    assert!(
        !ok && said.contains("Unauthenticated") && said.contains("Bearer"),
        "{said}"
    );
    // Reflection describes the API to authenticated callers only.
    let (ok, said) = run(
        &grpcurl.binary,
        &["-cacert", &grpcurl.ca, &grpcurl.addr, "list"],
    );
    assert!(
        !ok && said.contains("Unauthenticated"),
        "reflection needs credentials: {said}"
    );
    let (ok, said) = run(
        &grpcurl.binary,
        &["-cacert", &grpcurl.ca, "-H", &read, &grpcurl.addr, "list"],
    );
    assert!(ok && said.contains("mall.order.v1.OrderService"), "{said}");

    // Tokens: audience, issuer, nbf, lifetime, the wildcard.
    for (why, token, expected) in [
        ("another audience", stranger.clone(), "audience"),
        (
            "another issuer",
            bearer(&signed(
                "orders:read",
                serde_json::json!({"iss": "https://evil"}),
                None,
                SECRET.as_bytes(),
            )),
            "issuer",
        ),
        (
            "not valid for a day yet",
            bearer(&signed(
                "orders:read",
                serde_json::json!({"nbf": now() + 86_400}),
                None,
                SECRET.as_bytes(),
            )),
            "nbf",
        ),
        (
            "expiring in the year 36812",
            bearer(&signed(
                "orders:read",
                serde_json::json!({"exp": 1_i64 << 40}),
                None,
                SECRET.as_bytes(),
            )),
            "longest lifetime",
        ),
    ] {
        let (ok, said) = grpcurl.call(
            &["-H", &token],
            &get(1),
            "mall.order.v1.OrderService/GetOrder",
        );
        assert!(
            !ok && said.contains("Unauthenticated") && said.contains(expected),
            "{why}: {said}"
        );
    }
    let everything = bearer(&token(AUDIENCE, "*"));
    let (ok, said) = grpcurl.call(
        &["-H", &everything],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        !ok && said.contains("PermissionDenied") && said.contains("AUTH_ALLOW_WILDCARD_SCOPE"),
        "the scope * grants nothing by default: {said}"
    );
    let (ok, said) = grpcurl.call(
        &["-H", &read],
        &get(424_242),
        "mall.order.v1.OrderService/GetOrder",
    );
    assert!(!ok && said.contains("NotFound"), "a reader reads: {said}");
    let (ok, said) = grpcurl.call(
        &["-H", &read],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        !ok && said.contains("PermissionDenied") && said.contains("orders:place"),
        "{said}"
    );
    // Rights are namespaced by service: inventory's read is not orders'.
    let stock_reader = bearer(&token(AUDIENCE, "stock:read"));
    let (ok, said) = grpcurl.call(
        &["-H", &stock_reader],
        &get(1),
        "mall.order.v1.OrderService/GetOrder",
    );
    assert!(
        !ok && said.contains("PermissionDenied") && said.contains("orders:read"),
        "{said}"
    );
    let (ok, said) = grpcurl.call(
        &["-H", &placer],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(ok && said.contains("ORDER_STATUS_PENDING"), "{said}");

    // Certificates: rights by identity, none for an identity not listed.
    let cert = client_cert.to_string_lossy().into_owned();
    let key = client_key.to_string_lossy().into_owned();
    let (ok, said) = grpcurl.call(
        &["-cert", &cert, "-key", &key],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        ok && said.contains("ORDER_STATUS_PENDING"),
        "the ops certificate: {said}"
    );
    let (ok, said) = grpcurl.call(
        &[
            "-cert",
            &random_cert.to_string_lossy(),
            "-key",
            &random_key.to_string_lossy(),
        ],
        place,
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        !ok && said.contains("PermissionDenied") && said.contains("cert:random"),
        "a certificate of the same CA with no rights of its own: {said}"
    );
    let (ok, said) = run(&grpcurl.binary, &["-plaintext", &grpcurl.addr, "list"]);
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
            &grpcurl.ca,
            &cert,
            &key,
            &token(AUDIENCE, "orders:read"),
            &token(AUDIENCE, "orders:place"),
        ],
    );
    assert!(ok && said.contains("secure python client OK"), "{said}");

    shutdown.cancel();
    running.wait().await.expect("a clean stop");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_without_a_restart_and_a_token_can_be_bound_to_a_customer() {
    platform_service::telemetry::init();
    let dir = std::env::temp_dir().join(unique_name("mall-jwks-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let keys = dir.join("keys.json");
    let (old_secret, new_secret) = ([1_u8; 32], [2_u8; 32]);
    key_set(&keys, "2026-11", &old_secret);
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let mut args = service_args(&database, &brokers(), &prefix);
    args.auth_jwt_keys_file = Some(keys.clone());
    args.auth_jwt_audience = Some(AUDIENCE.into());
    args.auth_jwt_issuer = Some(ISSUER.into());
    args.auth_jwt_customer_claim = Some("customer_id".into());
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("the order service starts with a key set");
    let grpcurl = |extra: &[&str], data: &str, method: &str| {
        let addr = running.grpc_addr.to_string();
        let mut argv = vec!["-plaintext"];
        argv.extend_from_slice(extra);
        argv.extend(["-d", data, addr.as_str(), method]);
        run(&required_env("MALL_GRPCURL"), &argv)
    };
    let staff = |kid: &str, secret: &[u8]| {
        bearer(&signed(
            "orders:read orders:place orders:cancel",
            serde_json::json!({}),
            Some(kid),
            secret,
        ))
    };
    let place = |customer: i64| {
        format!(
            r#"{{"customer_id":{customer},"product_id":1,"product_name":"TV","qty":1,"address":"Seoul"}}"#
        )
    };
    let (ok, said) = grpcurl(
        &["-H", &staff("2026-11", &old_secret)],
        &place(1),
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(ok, "the current key signs: {said}");
    let (ok, said) = grpcurl(
        &["-H", &staff("2026-12", &new_secret)],
        &place(1),
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        !ok && said.contains("2026-12"),
        "an unknown kid is refused: {said}"
    );

    // Rotation: the file now holds only the new key; no restart.
    key_set(&keys, "2026-12", &new_secret);
    let rotated = mall_e2e::wait_for(
        "the new key to be read",
        std::time::Duration::from_secs(30),
        || async {
            let (ok, _) = grpcurl(
                &["-H", &staff("2026-12", &new_secret)],
                &place(1),
                "mall.order.v1.OrderService/PlaceOrder",
            );
            ok.then_some(())
        },
    );
    rotated.await;
    let (ok, said) = grpcurl(
        &["-H", &staff("2026-11", &old_secret)],
        &place(1),
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        !ok && said.contains("Unauthenticated"),
        "the old key is gone: {said}"
    );

    // A token bound to customer 7 acts only on customer 7's orders.
    let ann = bearer(&signed(
        "orders:read orders:place orders:cancel",
        serde_json::json!({"customer_id": 7, "sub": "ann"}),
        Some("2026-12"),
        &new_secret,
    ));
    let (ok, said) = grpcurl(
        &["-H", &ann],
        &place(1),
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(
        !ok && said.contains("PermissionDenied") && said.contains("customer 7"),
        "{said}"
    );
    let (ok, said) = grpcurl(
        &["-H", &ann],
        &place(7),
        "mall.order.v1.OrderService/PlaceOrder",
    );
    assert!(ok && said.contains("\"customerId\": \"7\""), "{said}");
    let (ok, said) = grpcurl(
        &["-H", &ann],
        r#"{"id":1}"#,
        "mall.order.v1.OrderService/GetOrder",
    );
    assert!(
        !ok && said.contains("NotFound"),
        "customer 1's order is not there for ann: {said}"
    );
    let (ok, said) = grpcurl(
        &["-H", &ann],
        r#"{"id":1}"#,
        "mall.order.v1.OrderService/CancelOrder",
    );
    assert!(
        !ok && said.contains("NotFound"),
        "nor can ann cancel it: {said}"
    );
    let (ok, said) = grpcurl(&["-H", &ann], "{}", "mall.order.v1.OrderService/ListOrders");
    assert!(ok, "{said}");
    let listed: serde_json::Value = serde_json::from_str(&said).expect("JSON");
    let customers: Vec<&str> = listed["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(|o| o["customerId"].as_str())
        .collect();
    assert_eq!(customers, ["7"], "ann lists her own order only: {said}");
    // Staff (no customer claim) see everyone's.
    let (ok, said) = grpcurl(
        &["-H", &staff("2026-12", &new_secret)],
        "{}",
        "mall.order.v1.OrderService/ListOrders",
    );
    assert!(ok && said.contains("\"customerId\": \"1\""), "{said}");

    shutdown.cancel();
    running.wait().await.expect("a clean stop");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_settings_are_refused_at_start_up() {
    let prefix = unique_name("t");
    let database = postgres::create_database(&format!("{prefix}_order")).await;
    let refused = async |args: &platform_service::config::ServiceArgs| match order_service::start(
        args,
        CancellationToken::new(),
    )
    .await
    {
        Ok(_) => panic!("started"),
        Err(error) => error.to_string(),
    };
    let base = service_args(&database, &brokers(), &prefix);
    // No audience, no issuer.
    let mut args = base.clone();
    args.auth_jwt_secret = Some(SECRET.into());
    assert!(refused(&args).await.starts_with("AUTH_JWT_AUDIENCE"));
    args.auth_jwt_audience = Some(AUDIENCE.into());
    assert!(refused(&args).await.starts_with("AUTH_JWT_ISSUER"));
    // A secret short enough to guess from any token.
    args.auth_jwt_issuer = Some(ISSUER.into());
    args.auth_jwt_secret = Some("secret".into());
    let said = refused(&args).await;
    assert!(
        said.starts_with("AUTH_JWT_HS256_SECRET") && said.contains("32 bytes"),
        "{said}"
    );
    // The old any-certificate rights.
    let mut args = base.clone();
    args.grpc_tls_client_ca = Some("/nonexistent".into());
    args.auth_client_cert_rights = "*".into();
    assert!(refused(&args).await.starts_with("AUTH_CLIENT_CERT_RIGHTS"));
    // Open to everyone on an address that is not loopback.
    let mut args = base.clone();
    args.grpc_addr = Some("0.0.0.0:0".parse().expect("addr"));
    let said = refused(&args).await;
    assert!(said.starts_with("GRPC_ALLOW_UNAUTHENTICATED"), "{said}");
    args.grpc_allow_unauthenticated = true;
    let shutdown = CancellationToken::new();
    let running = order_service::start(&args, shutdown.clone())
        .await
        .expect("an explicit setting serves everyone");
    shutdown.cancel();
    running.wait().await.expect("a clean stop");
}
