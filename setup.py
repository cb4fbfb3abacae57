import glob
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# Files outside the package that an installed copy needs, put inside it (fcgi_backend/FOLDER/):
# the vhost templates `fcgi-backend apache-conf` fills in, the Apache connector's C source (built
# with apxs), and the systemd unit and logrotate snippet.
SHIPPED = {
    "apache_conf": ["apache_conf/*.conf"],
    "connector_c": ["connector_c/mod_fcgi_backend.c", "connector_c/fcgi_wire.c", "connector_c/fcgi_wire.h"],
    "service": ["service/fcgi-backend@.service", "service/fcgi-backend.logrotate"],
}


class BuildExtWithAdvice(build_ext):
    """Turn a compiler failure into a message that says what to install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:
            raise SystemExit(
                f"fcgi_backend: building the C multipart parser (connector_c/) failed: {exc}\n"
                "It needs a C compiler and the Python headers; on Debian: apt-get install gcc python3-dev"
            ) from exc


class BuildPyWithShippedFiles(build_py):
    """build_py, plus the SHIPPED files copied into the built package."""

    def run(self):
        super().run()
        for folder, patterns in SHIPPED.items():
            target = os.path.join(self.build_lib, "fcgi_backend", folder)
            os.makedirs(target, exist_ok=True)
            for pattern in patterns:
                for path in glob.glob(pattern):
                    shutil.copy(path, target)


setup(
    name="fcgi_backend",
    version="0.1.0",
    description="A FastCGI application server for Python handlers and mustache views behind Apache 2.4",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["fcgi_backend", "fcgi_backend.*"]),
    install_requires=["flup>=1.0.3", "pystache>=0.6", "cffi>=1.15", "httptools>=0.6"],
    extras_require={"postgresql": ["psycopg[binary]>=3.1"]},  # sessions in PostgreSQL
    setup_requires=["cffi>=1.15"],
    cffi_modules=["connector_c/build_multipart.py:ffibuilder"],
    cmdclass={"build_ext": BuildExtWithAdvice, "build_py": BuildPyWithShippedFiles},
    entry_points={"console_scripts": ["fcgi-backend = fcgi_backend.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: Web Environment",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
