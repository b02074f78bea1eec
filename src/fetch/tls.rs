//! TLS to Marathon: rustls with the trust `curl --cacert` gives, and every failure in words.
//!
//! webpki refuses a server certificate that is itself a CA (`CaUsedAsEndEntity`), which is what
//! `openssl req -x509` makes and what `curl --cacert` accepts when that very certificate is the
//! one trusted (issue 12). So a certificate byte-equal to one of `--marathon-ca-cert`'s is
//! accepted when its host name and validity dates fit; any other is verified by webpki as usual.
//! ureq's own rustls connector takes no custom verifier, hence the small connector here.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

/// The rustls client configuration for `roots` (the Mozilla roots when `None`), trusting the
/// certificates in `pinned` as servers' own certificates too.
pub(super) fn client_config(
    pinned: Vec<CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if pinned.is_empty() {
        // Mozilla's roots compiled into the binary: the same trust on every host and in
        // minimal containers without a CA store.
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        roots.add_parsable_certificates(pinned.iter().cloned());
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| rustls::Error::General(error.to_string()))?;
    let verifier = Arc::new(Verifier { pinned, webpki });
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Exact trust in the given certificates first, webpki's chain verification otherwise.
#[derive(Debug)]
struct Verifier {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pinned| pinned[..] == end_entity[..])
        {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            check_validity(end_entity, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| match error {
                // webpki says "unknown issuer" of a self-signed leaf and "CA used as end entity"
                // of a self-signed CA; both are one thing to the operator.
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::Other(_),
                ) if is_self_signed(end_entity) => words(
                    "the server's certificate is self-signed and is not one of the trusted \
                           certificates (give it with --marathon-ca-cert to trust it)",
                ),
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A certificate failure already put in words, carried through rustls as an `OtherError`.
#[derive(Debug)]
pub(super) struct TlsWords(pub(super) String);

impl fmt::Display for TlsWords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsWords {}

fn words(text: &str) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        TlsWords(text.to_string()),
    ))))
}

/// A TLS failure in words: what was wrong with the certificate or the handshake, never a
/// Debug string.
pub(super) fn describe(error: &rustls::Error) -> String {
    use CertificateError as C;
    let certificate = match error {
        rustls::Error::InvalidCertificate(certificate) => certificate,
        rustls::Error::AlertReceived(alert) => return describe_alert(*alert),
        rustls::Error::NoCertificatesPresented => {
            return "the server presented no certificate".to_string()
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            return "the server's answer is not TLS (is this port plain http?)".to_string()
        }
        rustls::Error::PeerIncompatible(_) => {
            return "the server offers no TLS version or cipher this tool accepts (TLS 1.2 or \
                    1.3 with a current cipher)"
                .to_string()
        }
        rustls::Error::PeerMisbehaved(_) => {
            return "the server broke the TLS protocol during the handshake".to_string()
        }
        other => return format!("the TLS handshake failed: {other}"),
    };
    let trust_hint = "; the server's certificate must chain to a trusted root: the built-in \
                      Mozilla roots, or the certificates given with --marathon-ca-cert";
    match certificate {
        C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check this host's clock)".into()
        }
        C::NotValidForName => "the server's certificate is for another host name".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the server's certificate is for another host name: {} was asked, the certificate \
             names {}",
            expected.to_str(),
            if presented.is_empty() {
                "none".to_string()
            } else {
                presented.join(", ")
            }
        ),
        C::UnknownIssuer => {
            format!("the server's certificate is signed by an unknown issuer{trust_hint}")
        }
        C::BadSignature => "the server's certificate has a bad signature".into(),
        C::Revoked => "the server's certificate is revoked".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "the server's certificate is not for TLS servers (extended key usage)".into()
        }
        C::BadEncoding => "the server's certificate cannot be parsed".into(),
        C::Other(rustls::OtherError(inner)) => {
            if let Some(words) = inner.downcast_ref::<TlsWords>() {
                return words.0.clone();
            }
            match inner.to_string().as_str() {
                "CaUsedAsEndEntity" => format!(
                    "the server's certificate is a CA certificate, and not itself one of the \
                     trusted certificates{trust_hint}"
                ),
                text => format!("the server's certificate was refused ({text}){trust_hint}"),
            }
        }
        other => format!("the server's certificate was refused: {other}{trust_hint}"),
    }
}

/// What the server's TLS alert means for the operator.
fn describe_alert(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    let meaning = match alert {
        A::HandshakeFailure => "no TLS version or cipher both sides accept",
        A::ProtocolVersion => "no TLS version both sides accept",
        A::CertificateRequired | A::BadCertificate => {
            "it wants a client certificate, which this tool does not send"
        }
        A::UnrecognisedName => "it serves no certificate for the host name asked",
        A::AccessDenied => "access denied",
        A::InternalError => "an internal error on the server",
        _ => "",
    };
    let number = u8::from(alert);
    if meaning.is_empty() {
        format!("the server refused the TLS handshake (alert {number})")
    } else {
        format!("the server refused the TLS handshake: {meaning} (alert {number})")
    }
}

fn is_self_signed(certificate: &CertificateDer<'_>) -> bool {
    tbs_fields(certificate).is_some_and(|fields| fields.issuer == fields.subject)
}

/// Refuses a certificate outside its validity dates, as webpki would.
fn check_validity(certificate: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let fields = tbs_fields(certificate).ok_or(rustls::Error::InvalidCertificate(
        CertificateError::BadEncoding,
    ))?;
    let now = now.as_secs();
    if now < fields.not_before {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > fields.not_after {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}

/// The few fields of an X.509 certificate read here.
struct TbsFields<'a> {
    issuer: &'a [u8],
    subject: &'a [u8],
    not_before: u64,
    not_after: u64,
}

/// Walks `Certificate → TBSCertificate → version?, serial, signature, issuer, validity,
/// subject` (RFC 5280 §4.1) in DER.
fn tbs_fields<'a>(certificate: &'a CertificateDer<'_>) -> Option<TbsFields<'a>> {
    let (tag, certificate, _) = der_element(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, tbs, _) = der_element(certificate)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (mut tag, mut value, mut next) = der_element(rest)?;
    if tag == 0xA0 {
        rest = next;
        (tag, value, next) = der_element(rest)?;
    }
    let _serial = (tag == 0x02).then_some(value)?;
    let (_, _signature, next) = der_element(next)?;
    let (_, issuer, next) = der_element(next)?;
    let (tag, validity, next) = der_element(next)?;
    if tag != 0x30 {
        return None;
    }
    let (_, subject, _) = der_element(next)?;
    let (before_tag, before, after_rest) = der_element(validity)?;
    let (after_tag, after, _) = der_element(after_rest)?;
    Some(TbsFields {
        issuer,
        subject,
        not_before: der_time(before_tag, before)?,
        not_after: der_time(after_tag, after)?,
    })
}

/// One DER element: its tag, its contents and what follows it.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (digits, after) = rest.split_at(count);
        rest = after;
        digits
            .iter()
            .fold(0usize, |length, digit| (length << 8) | usize::from(*digit))
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn der_time(tag: u8, text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let year: i64 = text[..2].parse().ok()?;
            (
                if year < 50 { 2000 + year } else { 1900 + year },
                &text[2..],
            )
        }
        0x18 if text.len() == 14 => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |range: std::ops::Range<usize>| rest.get(range)?.parse::<i64>().ok();
    let (month, day) = (field(0..2)?, field(2..4)?);
    let (hour, minute, second) = (field(4..6)?, field(6..8)?, field(8..10)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// ureq's connector chain link that wraps https connections in rustls with our verifier.
#[derive(Debug)]
pub(super) struct TlsConnector {
    pub(super) config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details
            .uri
            .host()
            .ok_or(ureq::Error::BadUri(details.uri.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| ureq::Error::BadUri(details.uri.to_string()))?;
        let mut connection = ClientConnection::new(self.config.clone(), name)
            .map_err(|error| ureq::Error::Io(std::io::Error::other(error)))?;
        let mut socket = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        socket.set_timeout(details.timeout);
        connection.complete_io(&mut socket)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(TlsTransport {
            buffers,
            stream: StreamOwned::new(connection, socket),
        })))
    }
}

pub(super) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTransport")
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_times_read_as_unix_seconds() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"261201221000Z"), Some(1_796_163_000));
        assert_eq!(der_time(0x18, b"20261201221000Z"), Some(1_796_163_000));
        assert_eq!(der_time(0x17, b"2612012210Z"), None);
    }
}
