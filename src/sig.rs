//! ECDSA signatures of one length, for certificates, CSRs and TLS
//! handshakes.
//!
//! An ECDSA signature is two integers in DER, and each takes a byte less
//! when its top bit is clear, so one key signing one message twice gives 70,
//! 71 or 72 bytes (P-256). Certificates, CSRs and handshakes then change size
//! from one run to the next. In the simulator a link's bandwidth turns bytes
//! into microseconds, so the same seed would not give the same trace. A
//! signature is drawn again until both integers take their full width: four
//! draws on average, and every signature of a key has one length. It is as
//! valid as any other; verifiers do not see the difference.

use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256};
use rcgen::{SigningKey as RcgenKey, PKCS_ECDSA_P384_SHA384};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::SignatureScheme;

/// After this many draws the last one is used, whatever its length: the
/// chance of getting there is (3/4)^64, about 1e-8, and the signature is
/// valid all the same.
const MAX_DRAWS: usize = 64;

/// The length of a DER ECDSA signature whose integers both take their full
/// width (a zero byte, then `field` bytes with the top bit set).
fn full_length(field: usize) -> usize {
    let body = 2 * (2 + field + 1);
    body + if body < 128 { 2 } else { 3 }
}

/// Signs with `sign` until the signature has the full length for a curve
/// of `field` bytes (`None`: not ECDSA, one draw).
fn draw<E>(field: Option<usize>, sign: impl Fn() -> Result<Vec<u8>, E>) -> Result<Vec<u8>, E> {
    let Some(field) = field else {
        return sign();
    };
    let want = full_length(field);
    let mut sig = sign()?;
    for _ in 1..MAX_DRAWS {
        if sig.len() == want {
            break;
        }
        sig = sign()?;
    }
    Ok(sig)
}

/// An rcgen key whose signatures all have one length: use it to sign
/// certificates and CSRs.
pub struct Even<'a>(pub &'a KeyPair);

impl PublicKeyData for Even<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl RcgenKey for Even<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let alg = self.0.algorithm();
        let field = if alg == &PKCS_ECDSA_P256_SHA256 {
            Some(32)
        } else if alg == &PKCS_ECDSA_P384_SHA384 {
            Some(48)
        } else {
            None
        };
        draw(field, || self.0.sign(msg))
    }
}

/// The field size of an ECDSA scheme's curve.
fn scheme_field(scheme: SignatureScheme) -> Option<usize> {
    match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => Some(32),
        SignatureScheme::ECDSA_NISTP384_SHA384 => Some(48),
        SignatureScheme::ECDSA_NISTP521_SHA512 => Some(66),
        _ => None,
    }
}

/// A TLS key whose handshake signatures all have one length.
#[derive(Debug)]
struct EvenKey(Arc<dyn SigningKey>);

impl SigningKey for EvenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        self.0
            .choose_scheme(offered)
            .map(|s| Box::new(EvenSigner(s)) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.0.public_key()
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        self.0.algorithm()
    }
}

#[derive(Debug)]
struct EvenSigner(Box<dyn Signer>);

impl Signer for EvenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        draw(scheme_field(self.0.scheme()), || self.0.sign(message))
    }

    fn scheme(&self) -> SignatureScheme {
        self.0.scheme()
    }
}

/// `chain` and its `key`, loaded by `provider`, signing handshakes with
/// signatures of one length; an error when the key is unusable or is not
/// the first certificate's.
pub fn certified_key(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, rustls::Error> {
    let key = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, Arc::new(EvenKey(key)));
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_lengths_are_those_of_the_curves() {
        assert_eq!(full_length(32), 72);
        assert_eq!(full_length(48), 104);
        assert_eq!(full_length(66), 141);
    }

    #[test]
    fn every_certificate_signature_of_a_key_has_one_length() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let even = Even(&key);
        for i in 0..40u8 {
            let sig = even.sign(&[i]).unwrap();
            assert_eq!(sig.len(), 72, "draw {i}");
        }
        // Unevened, the lengths vary: the test would catch a no-op.
        let lengths: std::collections::BTreeSet<usize> =
            (0..40u8).map(|i| key.sign(&[i]).unwrap().len()).collect();
        assert!(lengths.len() > 1, "{lengths:?}");
    }

    #[test]
    fn handshake_signatures_have_one_length_and_verify() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.test".into()])
            .unwrap()
            .self_signed(&Even(&key))
            .unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let ck = certified_key(&provider, vec![cert.der().clone()], der).unwrap();
        let signer = ck
            .key
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            key.public_key_raw(),
        );
        for i in 0..40u8 {
            let sig = signer.sign(&[i]).unwrap();
            assert_eq!(sig.len(), 72);
            public.verify(&[i], &sig).unwrap();
        }
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let der = PrivateKeyDer::try_from(other.serialize_der()).unwrap();
        assert!(certified_key(&provider, vec![cert.der().clone()], der).is_err());
    }
}
