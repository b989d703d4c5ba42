//! A throwaway certificate authority for tests of TLS between real peers:
//! certificates it issues are trusted by whoever is given its PEM, and by
//! nothing else.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};

pub struct TestCa {
    certificate: Certificate,
    key: KeyPair,
}

/// A server certificate and its private key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// PEM files written by [`TestCa::write`].
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "agentmesh test CA");
        let certificate = params.self_signed(&key).expect("a self-signed CA certificate");
        Self { certificate, key }
    }

    pub fn ca_pem(&self) -> String {
        self.certificate.pem()
    }

    /// A certificate for `names`: DNS names, or IP addresses written as such.
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("server certificate parameters");
        let certificate = params.signed_by(&key, &self.certificate, &self.key).expect("a CA-signed certificate");
        Issued { cert_pem: certificate.pem(), key_pem: key.serialize_pem() }
    }

    /// Writes the CA certificate and a certificate for `names` with its key
    /// into `dir`.
    pub fn write(&self, dir: &Path, names: &[&str]) -> TlsFiles {
        let issued = self.issue(names);
        let files =
            TlsFiles { ca_file: dir.join("ca.pem"), cert_file: dir.join("cert.pem"), key_file: dir.join("key.pem") };
        std::fs::write(&files.ca_file, self.ca_pem()).expect("write the CA certificate");
        std::fs::write(&files.cert_file, issued.cert_pem).expect("write the certificate");
        std::fs::write(&files.key_file, issued.key_pem).expect("write the key");
        files
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
