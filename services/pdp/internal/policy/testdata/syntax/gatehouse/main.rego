package gatehouse.main

default decision := {
