-- Databases of the Gatehouse services, one each, owned by the superuser the
-- container was started with. Run once by the postgres image's entrypoint
-- (official or deploy/postgres/build-image.sh's) on an empty data directory;
-- the services create their tables themselves with their migrations.
CREATE DATABASE issuer;
CREATE DATABASE pdp;
CREATE DATABASE invoice;
CREATE DATABASE support;
