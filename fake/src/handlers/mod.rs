//! One module per API (or family of APIs), each with handler functions
//! `async fn(Ctx, Request) -> Response`, and the dispatch table.
//!
//! To serve another API: add a module with its handler and one `route`
//! line below; ApiVersions advertises the table, so nothing else changes.

pub(crate) mod api_versions;
pub(crate) mod configs;
pub(crate) mod consumer_group;
pub(crate) mod coordinator;
pub(crate) mod fetch;
pub(crate) mod group;
pub(crate) mod init_producer_id;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod offset_for_leader_epoch;
pub(crate) mod produce;
pub(crate) mod records;
pub(crate) mod topics;
pub(crate) mod transactions;

use rskafka::protocol::messages::*;

use crate::server::{route, route_optional, Routes};

/// What the cluster serves: API, versions (capped at what the codecs
/// know), handler. Minimum versions follow Kafka 4, which dropped the
/// oldest ones.
pub(crate) fn routes() -> Routes {
    Routes::new([
        route::<ApiVersionsRequest, _, _>(0, 4, api_versions::handle),
        route::<MetadataRequest, _, _>(0, 12, metadata::handle),
        // v12 (and EndTxn v5, TxnOffsetCommit v5) carry transaction
        // version 2; ApiVersions hides them when only version 1 is finalized.
        route_optional::<ProduceRequest, _, _>(3, 12, produce::handle),
        route::<FetchRequest, _, _>(4, 17, fetch::handle),
        route::<ListOffsetsRequest, _, _>(1, 10, list_offsets::handle),
        route::<OffsetForLeaderEpochRequest, _, _>(2, 4, offset_for_leader_epoch::handle),
        route::<DeleteRecordsRequest, _, _>(0, 2, records::delete_records),
        route::<CreateTopicsRequest, _, _>(2, 7, topics::create_topics),
        route::<DeleteTopicsRequest, _, _>(1, 6, topics::delete_topics),
        route::<CreatePartitionsRequest, _, _>(0, 3, topics::create_partitions),
        route::<InitProducerIdRequest, _, _>(0, 5, init_producer_id::handle),
        route::<DescribeConfigsRequest, _, _>(1, 4, configs::describe_configs),
        route::<IncrementalAlterConfigsRequest, _, _>(0, 1, configs::incremental_alter_configs),
        route::<DescribeClusterRequest, _, _>(0, 1, metadata::describe_cluster),
        route::<FindCoordinatorRequest, _, _>(0, 6, coordinator::find_coordinator),
        route::<JoinGroupRequest, _, _>(0, 9, group::join_group),
        route::<SyncGroupRequest, _, _>(0, 5, group::sync_group),
        route::<HeartbeatRequest, _, _>(0, 4, group::heartbeat),
        route::<LeaveGroupRequest, _, _>(0, 5, group::leave_group),
        route::<ListGroupsRequest, _, _>(0, 5, group::list_groups),
        route::<DescribeGroupsRequest, _, _>(0, 5, group::describe_groups),
        route::<DeleteGroupsRequest, _, _>(0, 2, group::delete_groups),
        route::<OffsetCommitRequest, _, _>(2, 9, group::offset_commit),
        route::<OffsetFetchRequest, _, _>(1, 9, group::offset_fetch),
        route::<OffsetDeleteRequest, _, _>(0, 0, group::offset_delete),
        route::<ConsumerGroupHeartbeatRequest, _, _>(0, 1, consumer_group::heartbeat),
        route::<ConsumerGroupDescribeRequest, _, _>(0, 0, consumer_group::describe),
        // v4+ is the brokers' verify-only form (KIP-890), not served.
        route::<AddPartitionsToTxnRequest, _, _>(0, 3, transactions::add_partitions_to_txn),
        route::<AddOffsetsToTxnRequest, _, _>(0, 3, transactions::add_offsets_to_txn),
        route::<TxnOffsetCommitRequest, _, _>(0, 5, transactions::txn_offset_commit),
        route::<EndTxnRequest, _, _>(0, 5, transactions::end_txn),
    ])
}
