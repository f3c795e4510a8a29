use super::*;

fn store_with_conversations(n: usize) -> (Store, Vec<String>) {
    let mut store = Store::default();
    let ids = (0..n)
        .map(|_| store.create_conversation("alice", json!({}), String::new()))
        .collect();
    store.create_conversation("bob", json!({}), String::new());
    (store, ids)
}

fn ids(rows: &[Conversation]) -> Vec<String> {
    rows.iter().map(|c| c.id.clone()).collect()
}

#[test]
fn conversations_default_to_newest_first_with_has_more() {
    let (store, created) = store_with_conversations(3);
    let (page, more) = store
        .list_conversations("alice", SortBy::UpdatedAtDesc, None, 20)
        .unwrap();
    assert_eq!(
        ids(&page),
        [created[2].clone(), created[1].clone(), created[0].clone()]
    );
    assert!(!more);
    let (page, more) = store
        .list_conversations("alice", SortBy::UpdatedAtDesc, None, 1)
        .unwrap();
    assert_eq!(ids(&page), [created[2].clone()]);
    assert!(more);
    let (page, more) = store
        .list_conversations("alice", SortBy::UpdatedAtDesc, Some(&created[2]), 1)
        .unwrap();
    assert_eq!(ids(&page), [created[1].clone()]);
    assert!(more);
    let (page, more) = store
        .list_conversations("alice", SortBy::UpdatedAtDesc, Some(&created[1]), 1)
        .unwrap();
    assert_eq!(ids(&page), [created[0].clone()]);
    assert!(!more, "a full page with nothing after it has no more");
}

#[test]
fn conversation_sorting_and_scope() {
    let (mut store, created) = store_with_conversations(3);
    let (page, _) = store
        .list_conversations("alice", SortBy::CreatedAt, None, 20)
        .unwrap();
    assert_eq!(ids(&page), created);
    store
        .rename("alice", &created[0], "renamed".to_owned())
        .unwrap();
    let (page, _) = store
        .list_conversations("alice", SortBy::UpdatedAtDesc, None, 20)
        .unwrap();
    assert_eq!(page[0].id, created[0]);
    assert_eq!(page[0].name, "renamed");
    let (page, _) = store
        .list_conversations("alice", SortBy::CreatedAtDesc, None, 20)
        .unwrap();
    assert_eq!(page[0].id, created[2]);
    assert!(
        store
            .list_conversations("carol", SortBy::UpdatedAtDesc, None, 20)
            .unwrap()
            .0
            .is_empty()
    );
    assert_eq!(
        store
            .list_conversations("carol", SortBy::UpdatedAtDesc, Some(&created[0]), 20)
            .unwrap_err(),
        CursorNotFound
    );
    assert!(store.delete_conversation("alice", &created[1]));
    assert!(!store.delete_conversation("alice", &created[1]));
    assert!(store.conversation("alice", &created[1]).is_none());
    assert_eq!(
        store
            .list_conversations("alice", SortBy::CreatedAt, None, 20)
            .unwrap()
            .0
            .len(),
        2
    );
}

#[test]
fn messages_page_backwards_from_first_id_oldest_first_within_a_page() {
    let mut store = Store::default();
    let conversation = store.create_conversation("alice", json!({}), String::new());
    let made: Vec<String> = (0..5)
        .map(|i| {
            store
                .add_message(
                    "alice",
                    &conversation,
                    json!({}),
                    format!("q{i}"),
                    Vec::new(),
                )
                .0
        })
        .collect();
    let queries = |rows: &[Message]| rows.iter().map(|m| m.query.clone()).collect::<Vec<_>>();

    let (page, more) = store.list_messages(&conversation, None, 20).unwrap();
    assert_eq!(queries(&page), ["q0", "q1", "q2", "q3", "q4"]);
    assert!(!more);
    let (page, more) = store.list_messages(&conversation, None, 2).unwrap();
    assert_eq!(queries(&page), ["q3", "q4"]);
    assert!(more);
    let (page, more) = store
        .list_messages(&conversation, Some(&made[3]), 2)
        .unwrap();
    assert_eq!(queries(&page), ["q1", "q2"]);
    assert!(more);
    let (page, more) = store
        .list_messages(&conversation, Some(&made[1]), 2)
        .unwrap();
    assert_eq!(queries(&page), ["q0"]);
    assert!(!more);
    assert_eq!(
        store
            .list_messages(&conversation, Some("nope"), 2)
            .unwrap_err(),
        CursorNotFound
    );
    assert_eq!(store.first_query(&conversation).as_deref(), Some("q0"));
}

#[test]
fn finished_messages_keep_their_outcome() {
    let mut store = Store::default();
    let conversation = store.create_conversation("alice", json!({}), String::new());
    let (id, _) = store.add_message(
        "alice",
        &conversation,
        json!({}),
        "q".to_owned(),
        Vec::new(),
    );
    store.finish_message(&id, String::new(), Some("boom".to_owned()));
    let message = store.message_mut("alice", &id).unwrap();
    assert_eq!(message.status, MessageStatus::Error);
    assert_eq!(message.error.as_deref(), Some("boom"));
    assert!(store.message_mut("bob", &id).is_none());
}
