-- Label Studio gets its own database on the shared PostgreSQL (MLflow uses POSTGRES_DB=mlflow).
CREATE DATABASE labelstudio OWNER dinoseg;
