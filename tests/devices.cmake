# Tests of engine/devices/.
vfmig_add_test(test_simvf SOURCES test_simvf.c LIBS vfmig_devices vfmig_common TIMEOUT 60)
