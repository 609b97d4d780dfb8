//! Client certificates: who a verified certificate names, and what each
//! identity may do (`AUTH_CLIENT_CERT_RIGHTS`).
//!
//! A certificate's identities are its subject alternative names (DNS names,
//! URIs, e-mail addresses) and its subject's common name. The rights table
//! maps identities to rights; an identity not in it gets none, so a
//! certificate from an organisation-wide CA grants nothing by itself.

use std::collections::HashMap;

use der::Decode;
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// Rights per certificate identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateRights(HashMap<String, Vec<String>>);

impl CertificateRights {
    /// Parses `identity=right right;identity=right`: entries separated by
    /// `;`, each an identity (a SAN or the subject's CN, exactly), `=`, and
    /// its rights separated by spaces or commas. Empty: no identity has a
    /// right.
    pub fn parse(table: &str) -> Result<Self, String> {
        let mut rights = HashMap::new();
        for entry in table.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((identity, granted)) = entry.split_once('=') else {
                return Err(format!(
                    "{entry:?} is not `identity=rights`; write e.g. \
                     `ops.example.com=orders:read orders:cancel;batch=orders:place`"
                ));
            };
            let identity = identity.trim();
            if identity.is_empty() {
                return Err(format!("{entry:?} names no identity"));
            }
            let granted: Vec<String> = granted
                .split([' ', ','])
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
            rights.insert(identity.to_owned(), granted);
        }
        Ok(Self(rights))
    }

    /// The first identity of `identities` the table knows, and the rights of
    /// every identity it knows.
    pub fn of<'a>(&self, identities: &'a [String]) -> (Option<&'a str>, Vec<String>) {
        let known: Vec<&String> = identities
            .iter()
            .filter(|i| self.0.contains_key(*i))
            .collect();
        let mut rights: Vec<String> = known.iter().flat_map(|i| self.0[*i].clone()).collect();
        rights.sort();
        rights.dedup();
        (known.first().map(|i| i.as_str()), rights)
    }
}

/// The identities a DER certificate names: its subject alternative names
/// (DNS, URI, e-mail), then its subject's common name.
pub fn identities(der: &[u8]) -> Vec<String> {
    let Ok(certificate) = Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some((_, SubjectAltName(alternatives)))) =
        certificate.tbs_certificate.get::<SubjectAltName>()
    {
        for name in alternatives {
            match name {
                GeneralName::DnsName(name)
                | GeneralName::UniformResourceIdentifier(name)
                | GeneralName::Rfc822Name(name) => names.push(name.to_string()),
                _ => {}
            }
        }
    }
    for rdn in certificate.tbs_certificate.subject.0.iter() {
        for attribute in rdn.0.iter() {
            if attribute.oid == const_oid::db::rfc4519::CN
                && let Ok(cn) = attribute
                    .value
                    .decode_as::<der::asn1::Utf8StringRef<'_>>()
                    .map(|s| s.to_string())
                    .or_else(|_| {
                        attribute
                            .value
                            .decode_as::<der::asn1::PrintableStringRef<'_>>()
                            .map(|s| s.to_string())
                    })
            {
                names.push(cn);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: Vec<String>, cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn a_certificate_names_its_sans_and_common_name() {
        let der = certificate(vec!["ops.example.com".into()], "ops");
        assert_eq!(identities(&der), ["ops.example.com", "ops"]);
        assert!(identities(b"not a certificate").is_empty());
    }

    #[test]
    fn rights_go_by_identity_and_default_to_none() {
        let table = CertificateRights::parse(
            "ops=orders:read orders:cancel; batch.example.com=orders:place",
        )
        .expect("parses");
        let batch = ["batch.example.com".to_owned(), "batch".to_owned()];
        let (who, rights) = table.of(&batch);
        assert_eq!(
            (who, rights),
            (Some("batch.example.com"), vec!["orders:place".to_owned()])
        );
        let random = ["random".to_owned()];
        let (who, rights) = table.of(&random);
        assert_eq!((who, rights.len()), (None, 0));
        assert_eq!(
            CertificateRights::parse(""),
            Ok(CertificateRights::default())
        );
        assert!(
            CertificateRights::parse("*").is_err(),
            "the old any-certificate form is refused"
        );
        assert!(CertificateRights::parse("=read").is_err());
    }
}
