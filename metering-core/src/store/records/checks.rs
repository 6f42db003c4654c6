//! Checks every record-store backend must pass, run by each backend's tests.

use super::RecordStore;
use crate::account::ApiKey;
use crate::clock::Timestamp;
use crate::tenant::TenantId;

fn key(id: &str, tenant: Option<&str>) -> ApiKey {
    ApiKey {
        id: id.into(),
        tenant_id: tenant.map(|t| TenantId::new(t).unwrap()),
        name: id.into(),
        service_name: None,
        key_hash: format!("hash-{id}"),
        created_by: "u-1".into(),
        created_at: Timestamp::EPOCH,
        revoked_at: None,
    }
}

/// A key is found by its id whatever its tenant, and the active keys of every tenant
/// are listed by id in pages, without the revoked ones.
pub(crate) async fn api_keys_by_id_and_across_tenants(store: &dyn RecordStore) {
    for k in [key("key_c", Some("acme")), key("key_a", Some("globex")), key("key_b", None), key("key_d", Some("acme"))]
    {
        store.insert_api_key(&k).await.unwrap();
    }
    assert_eq!(store.api_key("key_a").await.unwrap(), Some(key("key_a", Some("globex"))));
    assert_eq!(store.api_key("key_b").await.unwrap(), Some(key("key_b", None)));
    assert_eq!(store.api_key("key_z").await.unwrap(), None);
    assert!(store.revoke_api_key("key_c", Timestamp::from_secs(1)).await.unwrap());
    assert_eq!(store.api_key("key_c").await.unwrap().and_then(|k| k.revoked_at), Some(Timestamp::from_secs(1)));

    let ids = |keys: Vec<ApiKey>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(ids(store.active_api_keys(None, 10).await.unwrap()), ["key_a", "key_b", "key_d"]);
    assert_eq!(ids(store.active_api_keys(None, 2).await.unwrap()), ["key_a", "key_b"]);
    assert_eq!(ids(store.active_api_keys(Some("key_b"), 2).await.unwrap()), ["key_d"]);
    assert_eq!(ids(store.active_api_keys(Some("key_d"), 2).await.unwrap()), Vec::<String>::new());
}
