-- Notifications (notify.Webhook): the pending actions someone has been
-- told about, so that each is posted once, whichever process sharing the
-- database sees it first and however often it restarts. A row is claimed
-- before the post; the claim is a lazy write (losing it in a power cut
-- costs at most a second message).
CREATE TABLE notifications (
	action_id   TEXT PRIMARY KEY,
	notified_at TEXT NOT NULL
);
