//! TLS for PostgreSQL connections (rustls, `ring` provider), chosen by `sslmode`.

use crate::dsn::{ConnectConfig, SslMode};
use crate::PgError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Builds the rustls client configuration for `cfg.sslmode`.
pub(crate) fn client_config(cfg: &ConnectConfig) -> Result<Arc<ClientConfig>, PgError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?;
    let config = match cfg.sslmode {
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = load_roots(cfg)?;
            let verifier: Arc<dyn ServerCertVerifier> = if cfg.sslmode == SslMode::VerifyFull {
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| PgError::Tls(e.to_string()))?
            } else {
                Arc::new(CaOnlyVerifier {
                    inner: rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .map_err(|e| PgError::Tls(e.to_string()))?,
                })
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

pub(crate) fn server_name(cfg: &ConnectConfig) -> Result<ServerName<'static>, PgError> {
    ServerName::try_from(cfg.host.clone())
        .map_err(|_| PgError::Tls(format!("`{}` is not a valid tls server name", cfg.host)))
}

fn load_roots(cfg: &ConnectConfig) -> Result<RootCertStore, PgError> {
    let path = match &cfg.sslrootcert {
        Some(p) => p.clone(),
        None => {
            let home = std::env::var("HOME").unwrap_or_default();
            std::path::PathBuf::from(home).join(".postgresql/root.crt")
        }
    };
    let pem = std::fs::read(&path).map_err(|e| {
        PgError::Tls(format!(
            "sslmode={:?} needs a ca certificate: cannot read {}: {e}; set sslrootcert=PATH in the dsn",
            cfg.sslmode,
            path.display()
        ))
    })?;
    let mut store = RootCertStore::empty();
    let mut reader = std::io::BufReader::new(pem.as_slice());
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| PgError::Tls(format!("{}: {e}", path.display())))?;
        store
            .add(cert)
            .map_err(|e| PgError::Tls(format!("{}: {e}", path.display())))?;
    }
    if store.is_empty() {
        return Err(PgError::Tls(format!(
            "{} holds no pem certificate",
            path.display()
        )));
    }
    Ok(store)
}

/// `sslmode=require`: encrypt, but do not check who the server is (libpq semantics).
#[derive(Debug)]
struct NoVerifier(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to the given CA; the host name is not checked.
#[derive(Debug)]
struct CaOnlyVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for CaOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
