# PostgreSQL 15 with PostGIS 3 and pgvector, for the compose stack.
FROM postgis/postgis:15-3.4
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15-pgvector \
    && rm -rf /var/lib/apt/lists/*
COPY docker/initdb/10-extensions.sql /docker-entrypoint-initdb.d/10-extensions.sql
EXPOSE 5432
