-- Called by every table's row-level security policy, as the owner: true when the reader's snapshot sees the current
-- publication (a REPEATABLE READ transaction that began before it would otherwise find the new tables empty), and
-- the login has not lifted or raised its statement timeout (a superuser is trusted with its own); otherwise an error
-- saying what to do. Placeholder: the owner-only schema.
CREATE FUNCTION {private}.is_current(publication text) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  published {private}.publication;
  timeout interval := current_setting('statement_timeout')::interval;  -- as SHOW spells it: 0, 1500ms, 1min
BEGIN
  SELECT * INTO published FROM {private}.publication;
  IF publication IS DISTINCT FROM published.id THEN
    RAISE EXCEPTION 'the Product Affinity views were republished after this transaction took its snapshot'
      USING ERRCODE = 'serialization_failure', HINT = 'Start a new transaction to read them.';
  END IF;
  IF timeout = interval '0' OR timeout > published.statement_timeout_ms * interval '1ms' THEN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
      RAISE EXCEPTION 'statement_timeout is %: the Product Affinity views are read with at most %',
        current_setting('statement_timeout'), published.statement_timeout_ms * interval '1ms'
        USING ERRCODE = 'configuration_limit_exceeded', HINT = 'RESET statement_timeout, or set it lower.';
    END IF;
  END IF;
  RETURN true;
END $$
