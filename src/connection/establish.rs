//! Opening a connection: the transport, the driver task, API version
//! negotiation, then SASL. Kept apart from the driver (`broker.rs`) so that
//! the SASL exchange, which sends its requests through a
//! [`BrokerConnection`], is called from here and the driver depends on
//! nothing of SASL.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::{timeout_at, Instant};

use super::{
    stats::Counters, transport, BrokerConnection, ConnectionConfig, ConnectionError,
    EncodedRequest, VersionTable, CLIENT_SOFTWARE_NAME,
};
use crate::protocol::{
    messages::{ApiVersionsRequest, ApiVersionsResponse},
    ApiKey, ErrorCode, Message, Reader,
};

impl BrokerConnection {
    /// Connects to `addr` (`host:port` or `[v6]:port`) and negotiates API
    /// versions, all within `config.connect_timeout`.
    pub async fn connect(
        addr: &str,
        config: Arc<ConnectionConfig>,
    ) -> Result<Self, ConnectionError> {
        Self::connect_counted(addr, config, Arc::default()).await
    }

    /// [`connect`](Self::connect), counting its traffic in `counters`.
    pub(crate) async fn connect_counted(
        addr: &str,
        config: Arc<ConnectionConfig>,
        counters: Arc<Counters>,
    ) -> Result<Self, ConnectionError> {
        let result = Self::establish(addr, config, counters.clone()).await;
        let outcome = match &result {
            Ok(_) => &counters.connects,
            Err(_) => &counters.connect_failures,
        };
        Counters::add(outcome, 1);
        result
    }

    async fn establish(
        addr: &str,
        config: Arc<ConnectionConfig>,
        counters: Arc<Counters>,
    ) -> Result<Self, ConnectionError> {
        let deadline = Instant::now() + config.connect_timeout;
        let (reader, writer) = transport::connect(addr, &config).await?;
        let conn = Self::spawn(addr, config.clone(), reader, writer, counters);
        let versions = match timeout_at(deadline, negotiate(&conn, &config)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                conn.close();
                #[cfg(feature = "transport-tls")]
                if let Some(tls) = super::tls::explain_failure(addr, &e) {
                    return Err(tls);
                }
                // A peer speaking TLS or HTTP is best reported as such.
                return Err(match e {
                    ConnectionError::Disconnected {
                        cause: Some(cause), ..
                    } if !cause.is_retriable() => (*cause).clone(),
                    e => e,
                });
            }
            Err(_) => {
                conn.close();
                return Err(ConnectionError::Connect {
                    addr: addr.to_string(),
                    reason: format!(
                        "no ApiVersions answer within the connect timeout of {:?}",
                        config.connect_timeout
                    ),
                });
            }
        };
        conn.set_versions(versions);
        if let Some(sasl) = &config.sasl {
            let timeout = config.request_timeout;
            if let Err(e) =
                super::sasl::authenticate_connection(&conn, sasl, deadline, timeout).await
            {
                conn.close();
                return Err(e);
            }
        }
        Ok(conn)
    }
}

/// Asks the broker which versions it supports, starting at the highest
/// ApiVersions version this client knows. A broker that does not know that
/// version answers UNSUPPORTED_VERSION in a v0 body listing its own range;
/// the request is then repeated at the highest version both know.
async fn negotiate(
    conn: &BrokerConnection,
    config: &ConnectionConfig,
) -> Result<VersionTable, ConnectionError> {
    let key = ApiKey::API_VERSIONS;
    let (_, ours) = super::client_range(key).unwrap_or((0, ApiVersionsResponse::MAX_VERSION));
    let req = ApiVersionsRequest {
        client_software_name: CLIENT_SOFTWARE_NAME.to_string(),
        client_software_version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    };
    let client_id = Some(config.client_id.as_str());
    let mut version = ours;
    let mut retried = false;
    let resp = loop {
        let body = conn
            .round_trip(EncodedRequest::new(&req, version, client_id)?, false)
            .await?;
        match read_api_versions(body, version, ours, retried)? {
            ApiVersionsAnswer::Versions(resp) => break resp,
            ApiVersionsAnswer::RetryAt(next) => {
                tracing::debug!(broker = %conn.addr(), version = next, "retrying ApiVersions");
                version = next;
                retried = true;
            }
        }
    };
    Ok(VersionTable::new(
        resp.api_keys
            .iter()
            .map(|k| (ApiKey(k.api_key), k.min_version, k.max_version)),
        &config.max_versions,
    )
    .with_finalized_features(
        resp.finalized_features
            .into_iter()
            .map(|f| (f.name, f.max_version_level)),
    ))
}

/// What an ApiVersions answer says.
#[derive(Debug)]
enum ApiVersionsAnswer {
    /// The broker's versions.
    Versions(ApiVersionsResponse),
    /// The broker does not know the version asked: ask again at this one.
    RetryAt(i16),
}

/// Reads the answer `body` to an ApiVersions request at `version` (`ours`
/// the highest this client knows; `retried` once it asked again). A broker
/// that does not know the version answers in a v0 body, so a body that is
/// not a valid answer at `version`, or says UNSUPPORTED_VERSION, is read at
/// v0; UNSUPPORTED_VERSION is then retried once, at the highest version
/// both sides know.
fn read_api_versions(
    body: Bytes,
    version: i16,
    ours: i16,
    retried: bool,
) -> Result<ApiVersionsAnswer, ConnectionError> {
    let key = ApiKey::API_VERSIONS;
    let at_version = ApiVersionsResponse::decode(&mut Reader::new(body.clone()), version);
    let resp = match at_version {
        Ok(r) if r.error_code != ErrorCode::UNSUPPORTED_VERSION.0 => r,
        first => match ApiVersionsResponse::decode(&mut Reader::new(body), 0) {
            Ok(r0) => r0,
            Err(e0) => {
                return Err(ConnectionError::Decode {
                    api: key,
                    version,
                    source: first.err().unwrap_or(e0),
                })
            }
        },
    };
    if resp.error_code == ErrorCode::UNSUPPORTED_VERSION.0 && !retried {
        let broker_max = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == key.0)
            .map_or(0, |k| k.max_version);
        let next = broker_max.min(ours);
        if next < version && next >= 0 {
            return Ok(ApiVersionsAnswer::RetryAt(next));
        }
    }
    if resp.error_code != 0 {
        return Err(ConnectionError::Broker {
            api: key,
            code: ErrorCode(resp.error_code),
        });
    }
    Ok(ApiVersionsAnswer::Versions(resp))
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::messages::api_versions_response::ApiVersion;

    /// An ApiVersions answer encoded at `version`, listing ApiVersions up
    /// to `max`.
    fn answer(version: i16, code: ErrorCode, max: i16) -> Bytes {
        let resp = ApiVersionsResponse {
            error_code: code.0,
            api_keys: vec![ApiVersion {
                api_key: ApiKey::API_VERSIONS.0,
                min_version: 0,
                max_version: max,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, version).unwrap();
        buf.freeze()
    }

    #[test]
    fn an_answer_at_the_version_asked_is_the_versions() {
        let body = answer(4, ErrorCode::NONE, 4);
        let Ok(ApiVersionsAnswer::Versions(resp)) = read_api_versions(body, 4, 4, false) else {
            panic!("a v4 answer to v4 is read as is");
        };
        assert_eq!(resp.api_keys[0].max_version, 4);
    }

    #[test]
    fn an_unsupported_version_in_a_v0_body_retries_once_at_the_brokers_highest() {
        let body = answer(0, ErrorCode::UNSUPPORTED_VERSION, 2);
        assert!(matches!(
            read_api_versions(body.clone(), 4, 4, false),
            Ok(ApiVersionsAnswer::RetryAt(2))
        ));
        assert!(matches!(
            read_api_versions(body, 2, 4, true),
            Err(ConnectionError::Broker { code, .. }) if code == ErrorCode::UNSUPPORTED_VERSION
        ));
    }

    #[test]
    fn an_unsupported_version_with_nothing_lower_to_try_is_the_error() {
        // The broker's highest is not below the version asked.
        let body = answer(0, ErrorCode::UNSUPPORTED_VERSION, 4);
        assert!(matches!(
            read_api_versions(body, 3, 4, false),
            Err(ConnectionError::Broker { code, .. }) if code == ErrorCode::UNSUPPORTED_VERSION
        ));
    }

    #[test]
    fn a_body_unreadable_at_both_versions_reports_the_version_asked() {
        let body = Bytes::from_static(&[0]);
        assert!(matches!(
            read_api_versions(body, 3, 4, false),
            Err(ConnectionError::Decode { version: 3, .. })
        ));
    }
}
