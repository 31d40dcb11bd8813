-- Extensions the first migration expects; it also creates them if missing.
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS vector;
-- The migrations create these roles when missing; here they get passwords for the
-- compose network (change them for anything beyond a local stack).
CREATE ROLE psm_reader LOGIN PASSWORD 'psm';
CREATE ROLE psm_writer LOGIN PASSWORD 'psm';
