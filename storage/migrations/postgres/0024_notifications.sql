-- Notifications (notify.Webhook): the pending actions someone has been
-- told about, so that each is posted once, whichever replica sees it first
-- and however often it restarts. A row is claimed before the post.
CREATE TABLE notifications (
	action_id   TEXT COLLATE "C" PRIMARY KEY,
	notified_at TEXT COLLATE "C" NOT NULL
);
