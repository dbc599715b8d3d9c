-- Canopsis 24.04.3, « Migration manuelle »: the materialized view perf_data_name (made by
-- PostgreSQL migration 12 of the 23.x packages) becomes a table of the same columns, filled
-- from perf_data. canup runs it in one transaction (psql --single-transaction, stopping at the
-- first error): it is applied whole or not at all. The step runs it only while
-- perf_data_name is still a materialized view.
DROP INDEX IF EXISTS perf_data_name_name_idx;
DROP MATERIALIZED VIEW perf_data_name;
CREATE TABLE perf_data_name
(
    name       VARCHAR(255) NOT NULL,
    unit       VARCHAR(5)   NOT NULL,
    updated_at TIMESTAMP    NOT NULL
);
CREATE UNIQUE INDEX perf_data_name_name_idx ON perf_data_name (name);
INSERT INTO perf_data_name (name, unit, updated_at)
SELECT name, unit, MAX(time)
FROM perf_data
GROUP BY name, unit;
