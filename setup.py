from setuptools import find_packages, setup

setup(
    name="fcgi_backend",
    version="0.1.0",
    description="A FastCGI application server for Python handlers and mustache views behind Apache 2.4",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["fcgi_backend", "fcgi_backend.*"]),
    install_requires=["flup>=1.0.3", "pystache>=0.6", "cffi>=1.15"],
    entry_points={"console_scripts": ["fcgi-backend = fcgi_backend.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Environment :: Web Environment",
        "Topic :: Internet :: WWW/HTTP :: WSGI :: Server",
    ],
)
