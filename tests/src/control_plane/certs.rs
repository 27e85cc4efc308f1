//! Certificates for one control plane, generated with rcgen: a CA, the apiserver's serving certificate, the
//! admin client certificate (`system:masters`) and the service-account signing key.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use super::Error;

/// The admin user's name in the client certificate; its group is `system:masters`.
pub const ADMIN_USER: &str = "artgen-admin";

/// PEM texts of everything the apiserver and its clients need.
pub struct Certs {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub admin_cert: String,
    pub admin_key: String,
    /// EC P-256, PKCS#8, for `--service-account-signing-key-file`.
    pub service_account_key: String,
    /// Its public key (`PUBLIC KEY` PEM), for `--service-account-key-file`. kube-apiserver 1.37 does not take
    /// public keys out of a PKCS#8 private key file: "data does not contain any valid RSA or ECDSA public keys".
    pub service_account_public_key: String,
}

/// Where [`Certs::write`] put the files.
pub struct CertFiles {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
}

impl Certs {
    pub fn generate() -> Result<Self, Error> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::new())?;
        ca_params.distinguished_name = name("artgen-test-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        // "127.0.0.1" becomes an IP SAN, "localhost" a DNS SAN.
        let serving_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut serving = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        serving.distinguished_name = name("kube-apiserver", None);
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &ca)?;

        let admin_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut admin = CertificateParams::new(Vec::new())?;
        admin.distinguished_name = name(ADMIN_USER, Some("system:masters"));
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &ca)?;

        let service_account_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;

        Ok(Self {
            ca_cert: ca.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_public_key: service_account_key.public_key_pem(),
            service_account_key: service_account_key.serialize_pem(),
        })
    }

    /// Writes the files the apiserver reads into `dir` (private keys with mode 0600).
    pub fn write(&self, dir: &Path) -> Result<CertFiles, Error> {
        let files = CertFiles {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("serving.crt"),
            serving_key: dir.join("serving.key"),
            service_account_key: dir.join("sa.key"),
            service_account_public_key: dir.join("sa.pub"),
        };
        write(&files.ca_cert, &self.ca_cert, false)?;
        write(&files.serving_cert, &self.serving_cert, false)?;
        write(&files.serving_key, &self.serving_key, true)?;
        write(&files.service_account_key, &self.service_account_key, true)?;
        write(
            &files.service_account_public_key,
            &self.service_account_public_key,
            false,
        )?;
        Ok(files)
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

pub(super) fn write(path: &Path, contents: &str, private: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(contents.as_bytes()).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
