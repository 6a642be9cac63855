-- The values of one group's row filter for the login reading, by session_user (which neither SET ROLE nor a
-- SECURITY DEFINER function changes); NULL for a login with none. Placeholder: the owner-only schema.
CREATE FUNCTION {private}.row_filter_values("group" text, filter integer) RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  SELECT f."values" FROM {private}.row_filter AS f WHERE f.login = session_user AND f."group" = $1 AND f.filter = $2
$$
