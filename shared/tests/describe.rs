//! What each message kind says about itself: the entities an event touches agree with its
//! aggregate (the subject it is stored under), and summaries read as the audit prints them.

use cairn_shared::Event;
use cairn_shared::event::Aggregate;

mod samples;

#[test]
fn an_event_touches_the_entity_it_is_stored_under() {
    let events = samples::events();
    assert!(!events.is_empty());
    for envelope in events {
        let event = &envelope.body;
        let touches = event.touches();
        let agrees = match event.aggregate() {
            Aggregate::Node(node) => touches.node == Some(&node),
            Aggregate::Job(job) => touches.job == Some(job),
            Aggregate::Execution(execution) => touches.execution == Some(execution),
            Aggregate::Command(command) => touches.command == Some(command),
            Aggregate::Input => touches == Default::default(),
        };
        assert!(agrees, "{event:?} touches {touches:?}");
        assert!(!event.summary().is_empty());
    }
}

#[test]
fn summaries_name_what_happened() {
    let changed = samples::events()
        .into_iter()
        .find_map(|e| match e.body {
            Event::ExecutionStateChanged(c) => Some(c),
            _ => None,
        })
        .expect("a sample state change");
    let summary = Event::from(changed.clone()).summary();
    assert!(
        summary.starts_with(&format!(
            "{} on {} {}",
            changed.execution, changed.node, changed.state
        )),
        "{summary}"
    );
    if let Some(code) = changed.exit_code {
        assert!(summary.contains(&format!("(exit {code})")), "{summary}");
    }
}
