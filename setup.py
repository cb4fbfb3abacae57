from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


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
    cmdclass={"build_ext": BuildExtWithAdvice},
    entry_points={"console_scripts": ["fcgi-backend = fcgi_backend.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: Web Environment",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
