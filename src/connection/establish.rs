//! Opening a connection: the transport, the driver task, API version
//! negotiation, then SASL. Kept apart from the driver (`broker.rs`) so that
//! the SASL exchange, which sends its requests through a
//! [`BrokerConnection`], is called from here and the driver depends on
//! nothing of SASL.

use std::sync::Arc;

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
                tracing::debug!(broker = %conn.addr(), version = next, "retrying ApiVersions");
                version = next;
                retried = true;
                continue;
            }
        }
        break resp;
    };
    if resp.error_code != 0 {
        return Err(ConnectionError::Broker {
            api: key,
            code: ErrorCode(resp.error_code),
        });
    }
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
