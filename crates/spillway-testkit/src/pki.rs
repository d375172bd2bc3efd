//! A throwaway certificate authority for TLS tests, made with the `openssl`
//! command: a CA, a server certificate for `localhost` and `127.0.0.1`, a
//! client certificate, and PKCS#12 bundles of them (reference 000's
//! keystore and truststore).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::KitResult;

/// Files of a throwaway PKI, all in one directory.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The directory holding everything.
    pub dir: PathBuf,
    /// CA certificate (PEM): `root.crt`.
    pub ca_cert: PathBuf,
    /// Server certificate (PEM) signed by the CA.
    pub server_cert: PathBuf,
    /// Server key (PEM, unencrypted).
    pub server_key: PathBuf,
    /// Client certificate (PEM) signed by the CA, CN `spillway-client`.
    pub client_cert: PathBuf,
    /// Client key (PEM, unencrypted).
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> KitResult<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e} (install it: make deps)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn sign(dir: &Path, name: &str, cn: &str, ext: &str) -> KitResult<()> {
    let (key, csr, crt, extfile) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&extfile), ext).map_err(|e| e.to_string())?;
    let subj = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-new", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr,
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "root.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ],
    )
}

impl TestPki {
    /// Creates the CA and the server and client certificates in `dir`.
    pub fn create(dir: &Path) -> KitResult<TestPki> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-x509",
                "-days",
                "2",
                "-nodes",
                "-subj",
                "/CN=spillway-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca.key",
                "-out",
                "root.crt",
            ],
        )?;
        sign(
            dir,
            "server",
            "localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        sign(
            dir,
            "client",
            "spillway-client",
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        )?;
        Ok(TestPki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("root.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        })
    }

    /// The client certificate and key as a PKCS#12 keystore
    /// (`user.p12`), protected by `password`.
    pub fn client_keystore(&self, password: &str) -> KitResult<PathBuf> {
        let pass = format!("pass:{password}");
        openssl(
            &self.dir,
            &[
                "pkcs12",
                "-export",
                "-in",
                "client.crt",
                "-inkey",
                "client.key",
                "-name",
                "spillway-client",
                "-out",
                "user.p12",
                "-passout",
                &pass,
            ],
        )?;
        Ok(self.dir.join("user.p12"))
    }

    /// The CA certificate as a PKCS#12 truststore without keys
    /// (`cluster-ca.p12`), protected by `password`.
    pub fn ca_truststore(&self, password: &str) -> KitResult<PathBuf> {
        let pass = format!("pass:{password}");
        openssl(
            &self.dir,
            &[
                "pkcs12",
                "-export",
                "-nokeys",
                "-in",
                "root.crt",
                "-name",
                "cluster-ca",
                "-out",
                "cluster-ca.p12",
                "-passout",
                &pass,
            ],
        )?;
        Ok(self.dir.join("cluster-ca.p12"))
    }
}
