-- The synergyflow-pooler setup in miniature: an application role and database, and the auth
-- user with the user_search() function that auth_query calls (expired passwords read as NULL).
CREATE ROLE synergyflow_app LOGIN PASSWORD 'synergyflow-dev-password';
CREATE DATABASE synergyflow OWNER synergyflow_app;
CREATE ROLE pooler LOGIN PASSWORD 'pooler-dev-password';
CREATE FUNCTION public.user_search(uname text) RETURNS TABLE (usename name, passwd text)
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
  $$ SELECT usename, CASE WHEN valuntil < now() THEN NULL ELSE passwd END
     FROM pg_catalog.pg_shadow WHERE usename = uname $$;
REVOKE ALL ON FUNCTION public.user_search(text) FROM public;
GRANT EXECUTE ON FUNCTION public.user_search(text) TO pooler;
