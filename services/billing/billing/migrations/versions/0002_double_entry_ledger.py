"""double-entry ledger: transfers and balanced entries, invariants enforced by the database

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:00:00

- ``accounts.reserved`` becomes ``held`` (the user's held account).
- ``transfers`` (one movement) and ``entries`` (its legs, summing to zero) replace
  ``ledger_entries``; the history already recorded is converted, transfer by transfer.
- ``holds`` records why it was voided and the outcome of a completion after expiry.
- Triggers make the invariants the database's own (docs/billing.md, ADR 0010):
  entries balance, balances are the running total of the entries, held = pending holds,
  a hold resolves once, the money history is append-only.
"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "billing"

FUNCTIONS = r"""
CREATE FUNCTION billing.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing.%: % refused, the ledger is append-only', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END $$;

-- A hold's terms never change, and once resolved (or once its late completion is recorded) it
-- stays so: a second resolution is refused here even if the application tried one.
CREATE FUNCTION billing.guard_hold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'billing.holds: DELETE refused' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.generation_id, NEW.user_id, NEW.amount, NEW.units, NEW.expires_at, NEW.created_at)
       IS DISTINCT FROM (OLD.generation_id, OLD.user_id, OLD.amount, OLD.units, OLD.expires_at, OLD.created_at) THEN
        RAISE EXCEPTION 'hold %: its terms are immutable', OLD.generation_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.status <> 'pending'
       AND (NEW.status, NEW.committed, NEW.void_reason, NEW.resolved_at)
           IS DISTINCT FROM (OLD.status, OLD.committed, OLD.void_reason, OLD.resolved_at) THEN
        RAISE EXCEPTION 'hold %: already %', OLD.generation_id, OLD.status
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.late_outcome IS NOT NULL
       AND (NEW.late_outcome, NEW.late_amount, NEW.late_resolved_at)
           IS DISTINCT FROM (OLD.late_outcome, OLD.late_amount, OLD.late_resolved_at) THEN
        RAISE EXCEPTION 'hold %: late completion already recorded', OLD.generation_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

-- At commit: a user's balances are the running total of their transfers, and held is exactly
-- what their pending holds reserve.
CREATE FUNCTION billing.verify_account(uid uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    cur_available bigint;
    cur_held bigint;
    last_available bigint := 0;
    last_held bigint := 0;
    pending bigint;
BEGIN
    SELECT available, held INTO cur_available, cur_held FROM billing.accounts WHERE user_id = uid;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT available_after, held_after INTO last_available, last_held
      FROM billing.transfers WHERE user_id = uid ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        last_available := 0;
        last_held := 0;
    END IF;
    IF cur_available <> last_available OR cur_held <> last_held THEN
        RAISE EXCEPTION 'account %: balances (%, %) are not the total of its entries (%, %)',
            uid, cur_available, cur_held, last_available, last_held USING ERRCODE = 'check_violation';
    END IF;
    SELECT coalesce(sum(amount), 0) INTO pending FROM billing.holds WHERE user_id = uid AND status = 'pending';
    IF pending <> cur_held THEN
        RAISE EXCEPTION 'account %: held % but pending holds reserve %', uid, cur_held, pending
            USING ERRCODE = 'check_violation';
    END IF;
END $$;

CREATE FUNCTION billing.check_account() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM billing.verify_account(NEW.user_id);
    RETURN NULL;
END $$;

-- At commit, for every transfer: its entries balance, they match the user's deltas and the
-- transfer's kind, the running balances continue the user's previous transfer, and the hold it
-- settles agrees (so a hold never releases or charges more than it reserved, nor twice).
CREATE FUNCTION billing.check_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n int;
    total bigint;
    d_available bigint;
    d_held bigint;
    strangers int;
    wrong_system int;
    system_account text;
    prev_available bigint;
    prev_held bigint;
    shape_ok boolean;
    h billing.holds%ROWTYPE;
    expected bigint;
BEGIN
    SELECT count(*), coalesce(sum(amount), 0),
           coalesce(sum(amount) FILTER (WHERE account = 'available'), 0),
           coalesce(sum(amount) FILTER (WHERE account = 'held'), 0),
           count(*) FILTER (WHERE user_id IS NOT NULL AND user_id <> NEW.user_id)
      INTO n, total, d_available, d_held, strangers
      FROM billing.entries WHERE transfer_id = NEW.id;
    IF n < 2 OR total <> 0 OR strangers > 0 THEN
        RAISE EXCEPTION 'transfer %: % entries summing to % do not balance', NEW.id, n, total
            USING ERRCODE = 'check_violation';
    END IF;
    IF d_available <> NEW.available_delta OR d_held <> NEW.held_delta THEN
        RAISE EXCEPTION 'transfer %: entries move (%, %), the transfer says (%, %)',
            NEW.id, d_available, d_held, NEW.available_delta, NEW.held_delta USING ERRCODE = 'check_violation';
    END IF;
    shape_ok := CASE NEW.kind
        WHEN 'grant' THEN d_available = NEW.amount AND d_held = 0
        WHEN 'reserve' THEN d_available = -NEW.amount AND d_held = NEW.amount
        WHEN 'commit' THEN d_available = 0 AND d_held = -NEW.amount
        WHEN 'release' THEN d_available = NEW.amount AND d_held = -NEW.amount
        WHEN 'refund' THEN d_available = NEW.amount AND d_held = -NEW.amount
        WHEN 'expire' THEN d_available = NEW.amount AND d_held = -NEW.amount
        WHEN 'late_charge' THEN d_available = -NEW.amount AND d_held = 0
        ELSE false
    END;
    system_account := CASE
        WHEN NEW.kind = 'grant' AND NEW.reference LIKE 'purchase:%' THEN 'purchases'
        WHEN NEW.kind = 'grant' THEN 'grants'
        ELSE 'revenue'
    END;
    SELECT count(*) INTO wrong_system
      FROM billing.entries WHERE transfer_id = NEW.id AND user_id IS NULL AND account <> system_account;
    IF NOT shape_ok OR wrong_system > 0 THEN
        RAISE EXCEPTION 'transfer %: entries do not have the shape of a %', NEW.id, NEW.kind
            USING ERRCODE = 'check_violation';
    END IF;

    SELECT available_after, held_after INTO prev_available, prev_held
      FROM billing.transfers WHERE user_id = NEW.user_id AND id < NEW.id ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        prev_available := 0;
        prev_held := 0;
    END IF;
    IF prev_available + d_available <> NEW.available_after OR prev_held + d_held <> NEW.held_after THEN
        RAISE EXCEPTION 'transfer %: balances after (%, %) do not continue (%, %)',
            NEW.id, NEW.available_after, NEW.held_after, prev_available, prev_held USING ERRCODE = 'check_violation';
    END IF;

    IF NEW.generation_id IS NOT NULL THEN
        SELECT * INTO h FROM billing.holds WHERE generation_id = NEW.generation_id;
        IF NOT FOUND OR h.user_id <> NEW.user_id THEN
            RAISE EXCEPTION 'transfer %: no hold % of this user', NEW.id, NEW.generation_id
                USING ERRCODE = 'check_violation';
        END IF;
        expected := CASE NEW.kind
            WHEN 'reserve' THEN h.amount
            WHEN 'commit' THEN CASE WHEN h.status = 'committed' THEN h.committed END
            WHEN 'release' THEN CASE WHEN h.status = 'committed' THEN h.amount - h.committed END
            WHEN 'refund' THEN CASE WHEN h.status = 'voided' THEN h.amount END
            WHEN 'expire' THEN CASE WHEN h.status = 'expired' THEN h.amount END
            WHEN 'late_charge' THEN CASE WHEN h.late_outcome = 'collected' THEN h.late_amount END
        END;
        IF expected IS DISTINCT FROM NEW.amount THEN
            RAISE EXCEPTION 'transfer %: a % of % disagrees with hold % (%)',
                NEW.id, NEW.kind, NEW.amount, NEW.generation_id, h.status USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NULL;
END $$;
"""

TRIGGERS = r"""
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE ON billing.transfers
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER transfers_no_truncate BEFORE TRUNCATE ON billing.transfers
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON billing.entries
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER entries_no_truncate BEFORE TRUNCATE ON billing.entries
    FOR EACH STATEMENT EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER grants_append_only BEFORE UPDATE OR DELETE ON billing.grants
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER accounts_not_deleted BEFORE DELETE ON billing.accounts
    FOR EACH ROW EXECUTE FUNCTION billing.refuse_change();
CREATE TRIGGER holds_resolve_once BEFORE UPDATE OR DELETE ON billing.holds
    FOR EACH ROW EXECUTE FUNCTION billing.guard_hold();

CREATE CONSTRAINT TRIGGER transfers_balanced AFTER INSERT ON billing.transfers
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing.check_transfer();
CREATE CONSTRAINT TRIGGER accounts_match_entries AFTER INSERT OR UPDATE ON billing.accounts
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing.check_account();
CREATE CONSTRAINT TRIGGER holds_match_held AFTER INSERT OR UPDATE ON billing.holds
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION billing.check_account();
"""




def _execute_script(sql: str) -> None:
    """asyncpg prepares one command at a time: run the script statement by statement.
    Function bodies end with ``END $$;``, every other statement with ``;`` at a line end."""
    if "$$" in sql:
        statements = [chunk + "END $$" for chunk in sql.split("END $$;") if "CREATE" in chunk]
    else:
        statements = [chunk for chunk in sql.split(";\n") if chunk.strip()]
    for statement in statements:
        op.execute(statement)


DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS holds_match_held ON billing.holds;
DROP TRIGGER IF EXISTS accounts_match_entries ON billing.accounts;
DROP TRIGGER IF EXISTS transfers_balanced ON billing.transfers;
DROP TRIGGER IF EXISTS holds_resolve_once ON billing.holds;
DROP TRIGGER IF EXISTS accounts_not_deleted ON billing.accounts;
DROP TRIGGER IF EXISTS grants_append_only ON billing.grants;
DROP FUNCTION IF EXISTS billing.check_transfer();
DROP FUNCTION IF EXISTS billing.check_account();
DROP FUNCTION IF EXISTS billing.verify_account(uuid);
DROP FUNCTION IF EXISTS billing.guard_hold();
"""


def upgrade() -> None:
    op.alter_column("accounts", "reserved", new_column_name="held", schema=S)
    op.execute("ALTER TABLE billing.accounts RENAME CONSTRAINT reserved_not_negative TO held_not_negative")

    op.add_column("holds", sa.Column("void_reason", sa.String(16), nullable=True), schema=S)
    op.add_column("holds", sa.Column("late_outcome", sa.String(16), nullable=True), schema=S)
    op.add_column("holds", sa.Column("late_amount", sa.BigInteger(), nullable=True), schema=S)
    op.add_column("holds", sa.Column("late_resolved_at", sa.DateTime(timezone=True), nullable=True), schema=S)
    # The skeleton did not keep why a hold was voided; its refund event in the outbox did.
    op.execute(
        """
        UPDATE billing.holds h SET void_reason = coalesce(
            (SELECT o.payload -> 'data' ->> 'reason' FROM billing.outbox o
              WHERE o.payload ->> 'type' = 'genimage.billing.credits_refunded.v1'
                AND o.payload -> 'data' ->> 'generation_id' = h.generation_id::text
                AND o.payload -> 'data' ->> 'reason' IN ('failed', 'canceled')
              LIMIT 1),
            'failed')
         WHERE h.status = 'voided'
        """
    )
    for name, condition in [
        ("committed_amount_iff_committed", "(status = 'committed') = (committed IS NOT NULL)"),
        ("void_reason_iff_voided", "(status = 'voided') = (void_reason IS NOT NULL)"),
        ("void_reason_known", "void_reason IS NULL OR void_reason IN ('failed', 'canceled')"),
        ("late_only_after_expiry", "late_outcome IS NULL OR status = 'expired'"),
        ("late_outcome_known", "late_outcome IS NULL OR late_outcome IN ('collected', 'uncollected')"),
        (
            "late_recorded_whole",
            "(late_outcome IS NULL) = (late_amount IS NULL) AND (late_outcome IS NULL) = (late_resolved_at IS NULL)",
        ),
        ("late_within_hold", "late_amount IS NULL OR (late_amount > 0 AND late_amount <= amount)"),
    ]:
        op.create_check_constraint(name, "holds", condition, schema=S)
    op.create_index(
        "holds_pending_user", "holds", ["user_id"], schema=S, postgresql_where=sa.text("status = 'pending'")
    )
    op.create_check_constraint(
        "grant_reason_known", "grants", "reason IN ('signup', 'purchase', 'admin', 'promo')", schema=S
    )

    op.create_table(
        "transfers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("generation_id", sa.UUID(), nullable=True),
        sa.Column("reference", sa.String(300), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("available_delta", sa.BigInteger(), nullable=False),
        sa.Column("held_delta", sa.BigInteger(), nullable=False),
        sa.Column("available_after", sa.BigInteger(), nullable=False),
        sa.Column("held_after", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name="transfer_amount_positive"),
        sa.CheckConstraint(
            "kind IN ('grant', 'reserve', 'commit', 'release', 'refund', 'expire', 'late_charge')", name="kind_known"
        ),
        sa.CheckConstraint("(kind = 'grant') = (generation_id IS NULL)", name="generation_iff_not_grant"),
        sa.CheckConstraint("(kind = 'grant') = (reference IS NOT NULL)", name="reference_iff_grant"),
        sa.CheckConstraint("available_after >= 0 AND held_after >= 0", name="after_not_negative"),
        sa.ForeignKeyConstraint(["user_id"], ["billing.accounts.user_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("generation_id", "kind", name="one_transfer_per_kind_and_generation"),
        schema=S,
    )
    op.create_index("transfers_user_newest", "transfers", ["user_id", "id"], schema=S)
    op.create_index(
        "transfers_one_grant_per_reference",
        "transfers",
        ["reference"],
        unique=True,
        schema=S,
        postgresql_where=sa.text("kind = 'grant'"),
    )
    op.create_table(
        "entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("transfer_id", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(16), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount <> 0", name="entry_not_zero"),
        sa.CheckConstraint("account IN ('available', 'held', 'grants', 'purchases', 'revenue')", name="account_known"),
        sa.CheckConstraint("(account IN ('available', 'held')) = (user_id IS NOT NULL)", name="user_account_has_user"),
        sa.ForeignKeyConstraint(["transfer_id"], ["billing.transfers.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["billing.accounts.user_id"]),
        sa.PrimaryKeyConstraint("id"),
        schema=S,
    )
    op.create_index(op.f("ix_billing_entries_transfer_id"), "entries", ["transfer_id"], schema=S)
    op.create_index(
        "entries_system_accounts", "entries", ["account"], schema=S, postgresql_where=sa.text("user_id IS NULL")
    )

    _execute_script(FUNCTIONS)
    _execute_script(TRIGGERS)
    _convert_history()
    op.drop_index("ledger_entries_user_newest", table_name="ledger_entries", schema=S)
    op.drop_table("ledger_entries", schema=S)


def _convert_history() -> None:
    """Re-post the skeleton's one-sided ledger as balanced transfers, in their original order.

    The triggers created above check every converted transfer at commit: if the old history
    did not add up to the balances, the migration fails instead of inventing money.
    """
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            """
            SELECT e.user_id, e.type, e.amount, e.balance_after, e.generation_id, e.reference, e.created_at,
                   h.amount AS hold_amount, h.committed, h.status
              FROM billing.ledger_entries e
              LEFT JOIN billing.holds h ON h.generation_id = e.generation_id
             ORDER BY e.id
            """
        )
    ).all()
    # Running balances, recomputed from the movements (the skeleton wrote a commit line with the
    # balance after its release); the accounts must end equal to them.
    available: dict[object, int] = defaultdict(int)
    held: dict[object, int] = defaultdict(int)
    insert_transfer = sa.text(
        """
        INSERT INTO billing.transfers (kind, user_id, generation_id, reference, amount, available_delta, held_delta,
                                       available_after, held_after, created_at)
        VALUES (:kind, :user_id, :generation_id, :reference, :amount, :da, :dh, :available_after, :held_after,
                :created_at)
        RETURNING id
        """
    )
    insert_entry = sa.text(
        "INSERT INTO billing.entries (transfer_id, account, user_id, amount) VALUES (:t, :account, :user_id, :amount)"
    )
    for r in rows:
        u, reference = r.user_id, None
        if r.type == "grant":
            a, kind, da, dh, reference = r.amount, "grant", r.amount, 0, r.reference
            system = "purchases" if (r.reference or "").startswith("purchase:") else "grants"
            legs = [(system, None, -a), ("available", u, a)]
        elif r.type == "reserve":
            a, kind, da, dh = -r.amount, "reserve", r.amount, -r.amount
            legs = [("available", u, -a), ("held", u, a)]
        elif r.type == "commit":
            if not r.committed:
                continue
            a, kind, da, dh = r.committed, "commit", 0, -r.committed
            legs = [("held", u, -a), ("revenue", None, a)]
        elif r.type in ("release", "refund"):
            a, da, dh = r.amount, r.amount, -r.amount
            kind = "release" if r.type == "release" else ("expire" if r.status == "expired" else "refund")
            legs = [("held", u, -a), ("available", u, a)]
        else:
            raise RuntimeError(f"unknown ledger entry type {r.type!r}")
        available[u] += da
        held[u] += dh
        transfer_id = bind.execute(
            insert_transfer,
            {
                "kind": kind,
                "user_id": u,
                "generation_id": r.generation_id,
                "reference": reference,
                "amount": a,
                "da": da,
                "dh": dh,
                "available_after": available[u],
                "held_after": held[u],
                "created_at": r.created_at,
            },
        ).scalar_one()
        for account, user_id, amount in legs:
            bind.execute(insert_entry, {"t": transfer_id, "account": account, "user_id": user_id, "amount": amount})
    # Accounts the skeleton opened without any entry keep zero balances; every other account is
    # verified here (and again by the deferred triggers at commit).
    for (user_id,) in bind.execute(sa.text("SELECT user_id FROM billing.accounts")).all():
        bind.execute(sa.text("SELECT billing.verify_account(:u)"), {"u": user_id})


def downgrade() -> None:
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("generation_id", sa.UUID(), nullable=True),
        sa.Column("reference", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("balance_after >= 0", name="balance_after_not_negative"),
        sa.ForeignKeyConstraint(["user_id"], ["billing.accounts.user_id"]),
        sa.PrimaryKeyConstraint("id"),
        schema=S,
    )
    op.create_index("ledger_entries_user_newest", "ledger_entries", ["user_id", "id"], schema=S)
    # The skeleton's statement: one line per movement of the available balance (commits as 0).
    op.execute(
        """
        INSERT INTO billing.ledger_entries (user_id, type, amount, balance_after, generation_id, reference, created_at)
        SELECT user_id,
               CASE kind WHEN 'expire' THEN 'refund' WHEN 'late_charge' THEN 'commit' ELSE kind END,
               available_delta, available_after, generation_id, reference, created_at
          FROM billing.transfers ORDER BY id
        """
    )
    _execute_script(DROP_TRIGGERS)
    op.drop_table("entries", schema=S)
    op.drop_table("transfers", schema=S)
    op.execute("DROP FUNCTION IF EXISTS billing.refuse_change()")
    op.drop_constraint("grant_reason_known", "grants", schema=S, type_="check")
    op.drop_index("holds_pending_user", table_name="holds", schema=S)
    for name in (
        "late_within_hold",
        "late_recorded_whole",
        "late_outcome_known",
        "late_only_after_expiry",
        "void_reason_known",
        "void_reason_iff_voided",
        "committed_amount_iff_committed",
    ):
        op.drop_constraint(name, "holds", schema=S, type_="check")
    for column in ("late_resolved_at", "late_amount", "late_outcome", "void_reason"):
        op.drop_column("holds", column, schema=S)
    op.execute("ALTER TABLE billing.accounts RENAME CONSTRAINT held_not_negative TO reserved_not_negative")
    op.alter_column("accounts", "held", new_column_name="reserved", schema=S)

