//! What reaches Twilio's `Body`: no control, bidi or zero-width characters (they show
//! nothing, force UCS-2 and can make a text read other than it says), so a GSM-7 reply
//! with hidden characters stays GSM-7.

use crate::common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn hidden_characters_never_reach_twilio_and_the_body_stays_gsm7() {
    let (t, twilio, _, gw) = gateway(OPEN);
    let mut agent = TestAgent::connect(&t.state().join("agent.sock"));
    assert_eq!(
        gw.admit("SMf1000000000000000000000000000001", "+15557654321", "hi")
            .await,
        200
    );
    let m = agent.next_of("message");
    // 96 GSM-7 characters: one segment as GSM-7, two if anything forced UCS-2.
    let visible = "Your table for two is booked at 7pm tonight. Reply here if you need to change it. See you soon!!";
    assert_eq!(visible.len(), 96);
    let hidden = "\u{FEFF}Your\u{200B} table for two is booked at 7pm\u{202E} tonight.\u{2066} Reply here\u{200D} if you need\u{7} to change it.\u{1b} See you\u{2060} soon!!\u{200F}";
    agent.send(json!({"type": "reply", "id": m["id"], "text": hidden}));
    let sent = agent.next_of("sent");
    assert_eq!(sent["segments"], 1, "{sent}");
    let sends = twilio.sends();
    assert_eq!(sends.len(), 1);
    let body = sends[0].field("Body").unwrap();
    assert_eq!(body, visible);
    assert_eq!(
        smsgate::text::count_segments(body).encoding,
        smsgate::text::Encoding::Gsm7
    );
    assert_eq!(gw.stop().code(), Some(0));
}
