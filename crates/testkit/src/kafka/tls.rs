//! A certificate authority of the test's own, a broker certificate for
//! 127.0.0.1, and client certificates whose subject CN is the principal
//! the broker maps them to: PEM files, as Kafka (`ssl.keystore.type=PEM`)
//! and librdkafka (`ssl.ca.location`, `ssl.certificate.location`,
//! `ssl.key.location`) read them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Paths of what [`make`] wrote.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate clients and the broker trust.
    pub ca: PathBuf,
    /// The broker's key and certificate chain in one file (Kafka's PEM
    /// keystore).
    pub broker_keystore: PathBuf,
    dir: PathBuf,
}

impl TlsFiles {
    /// The paths [`make`] writes in `dir` (nothing is written).
    pub fn at(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            broker_keystore: dir.join("broker.pem"),
            dir: dir.to_owned(),
        }
    }

    /// The (certificate, key) files of the client certificate for `cn`.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("client-{cn}.pem")),
            self.dir.join(format!("client-{cn}.key")),
        )
    }
}

fn failed(what: &str) -> impl Fn(rcgen::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::other(format!("{what}: {e}"))
}

/// Makes the CA, the broker certificate and one client certificate per
/// entry of `clients` in `dir`.
pub fn make(dir: &Path, clients: &[String]) -> std::io::Result<TlsFiles> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate().map_err(failed("a CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed("CA"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mall test Kafka CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).map_err(failed("CA"))?;
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let key = KeyPair::generate().map_err(failed("a key"))?;
        let mut params = CertificateParams::new(names).map_err(failed("a certificate"))?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(failed("signing"))?;
        Ok::<_, std::io::Error>((cert.pem(), key.serialize_pem()))
    };
    let (broker_cert, broker_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "kafka",
    )?;
    let files = TlsFiles::at(dir);
    std::fs::write(&files.ca, ca.pem())?;
    // Kafka's PEM keystore: the PKCS#8 key, then the chain.
    std::fs::write(
        &files.broker_keystore,
        format!("{broker_key}{broker_cert}{}", ca.pem()),
    )?;
    for cn in clients {
        let (cert, key) = leaf(Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, cn)?;
        let (cert_path, key_path) = files.client(cn);
        std::fs::write(cert_path, cert)?;
        std::fs::write(key_path, key)?;
    }
    Ok(files)
}
