-- Live exchange rates, as policy_loads (0008) records the live policy. Every
-- process that decides (mandate serve, mandate admin) records here the rates
-- it loads, at start and on every hot reload; the newest load is the live
-- rates. Money limits are written in one base currency, so an approval (the
-- admin page, the approvals CLI, recovery) is refused unless it converted
-- money with the live rates: otherwise `approvals approve --rates other.csv`
-- would judge the approver's limit, the agent's rules and its counters on a
-- base amount of the approver's choosing.
--
-- command is the subcommand (serve, admin) and why (start, reload);
-- identity is the agent a serve process acts as, empty for admin; rates is
-- the file's text, kept with each load (a few hundred bytes).
CREATE TABLE rates_loads (
	seq       INTEGER PRIMARY KEY,
	version   TEXT    NOT NULL,
	base      TEXT    NOT NULL,
	rates     TEXT    NOT NULL,
	file      TEXT    NOT NULL,
	command   TEXT    NOT NULL,
	identity  TEXT    NOT NULL,
	pid       INTEGER NOT NULL,
	host      TEXT    NOT NULL,
	loaded_at TEXT    NOT NULL
);

CREATE TRIGGER rates_loads_no_update BEFORE UPDATE ON rates_loads
BEGIN
	SELECT RAISE(ABORT, 'rates loads are append-only');
END;
CREATE TRIGGER rates_loads_no_delete BEFORE DELETE ON rates_loads
BEGIN
	SELECT RAISE(ABORT, 'rates loads are append-only');
END;
